using System.Buffers.Binary;
using System.Text;
using Airlock.Envd;

namespace Airlock.Testing.Fuzz;

/// <summary>The envd families: Connect unary and streaming calls, /files, signed URLs, tokens, routing headers.</summary>
internal sealed partial class FuzzGenerator
{
    private static readonly string[] UnaryProcedures =
    [
        "/filesystem.Filesystem/Stat", "/filesystem.Filesystem/MakeDir", "/filesystem.Filesystem/Move", "/filesystem.Filesystem/ListDir",
        "/filesystem.Filesystem/Remove", "/filesystem.Filesystem/CreateWatcher", "/filesystem.Filesystem/GetWatcherEvents",
        "/filesystem.Filesystem/RemoveWatcher", "/process.Process/List", "/process.Process/SendInput", "/process.Process/SendSignal",
        "/process.Process/CloseStdin", "/process.Process/Update", "/process.Process/StreamInput", "/filesystem.Filesystem/Nope",
        "/process.Process/", "/airlock.agent.v1.Agent/SetIdentity", "/AIRLOCK.AGENT.V1.AGENT/SetIdentity", "/grpc.health.v1.Health/Check",
    ];

    private static readonly string[] StreamProcedures = ["/process.Process/Start", "/process.Process/Connect", "/filesystem.Filesystem/WatchDir"];

    /// <summary>Commands that end by themselves whatever their arguments (the fuzzer measures the server, not a fork bomb).</summary>
    private static readonly string[] Commands = ["/bin/true", "/bin/false", "/bin/echo", "/usr/bin/env", "/bin/ls", "/nonexistent/cmd", "", "bin/true", "../../bin/true", "/bin/true\0/bin/sh", "/home", "/etc/passwd"];

    private static readonly string[] Users = ["", "user", "root", "nobody", "nosuchuser", "0", "../root", "user\0root", "ünï"];

    /// <summary>
    /// A header value for an envd route, non-ASCII included: found by this suite (seed 1212, #2721), such a value used to
    /// pass the gateway and fail in YARP's HttpClient, a 502 for a running sandbox; the gateway now answers 400.
    /// </summary>
    private static string EnvdHeader(string value) => value;

    private static IEnumerable<KeyValuePair<string, string>> Envd(Ctx c, FuzzSandbox sandbox) =>
    [
        H("E2b-Sandbox-Id", sandbox.Id), H("E2b-Sandbox-Port", Num(EnvdProtocol.Port)), H(EnvdProtocol.AccessTokenHeader, sandbox.EnvdToken),
    ];

    /// <summary>Paths inside the sandbox, many of them naming the host's sentinels (absolute, ../, encoded, NUL).</summary>
    private static string SandboxPath(Ctx c)
    {
        var sentinel = c.Pick(c.T.HostSentinelPaths);
        return c.Rng.Next(18) switch
        {
            0 => sentinel,
            1 => "../../../../../../.." + sentinel,
            2 => "/home/user/../../.." + sentinel,
            3 => "~/../../.." + sentinel,
            4 => "/home/user/fuzz/" + c.Rng.Next(40),
            5 => "/home/user/fuzz/dir-" + c.Rng.Next(10) + "/f",
            6 => "",
            7 => "/",
            8 => sentinel + "\0/home/user/x",
            9 => "/home/user/ünï/😀-" + c.Rng.Next(5),
            10 => "/home/user/" + new string('d', c.Rng.Next(200, 5000)),
            11 => "//home//user//.//fuzz",
            12 => "/home/user/fuzz/" + c.Junk(),
            13 => "relative/fuzz-" + c.Rng.Next(10),
            14 => "/tmp/fuzz-" + c.Rng.Next(10),
            15 => "/etc/airlock-fuzz-written",
            16 => c.Pick(new[] { "/proc/self/status", "/proc/1/environ", "/dev/null", "/dev/zero", "/proc/self/root/etc/passwd" }),
            _ => "/proc/self/cwd/../../..",
        };
    }

    /// <summary>
    /// A path for <c>GET /files</c>, /proc files, devices, FIFOs and sockets included (issue 12 findings 1 and 2: they
    /// were 500s or a blocked agent thread; the agent now streams pseudo-files and refuses special files with 400).
    /// </summary>
    private static string ReadablePath(Ctx c) => SandboxPath(c);

    /// <summary>
    /// Paths whose removal (as root) wipes the fuzzed sandbox itself (its root, its home, its users): allowed to any
    /// tenant on its own sandbox, but the rest of the run would then measure a dead target.
    /// </summary>
    private static bool Destroys(string path) =>
        path is "" or "/" or "~" || path.StartsWith("/proc/self/cwd", StringComparison.Ordinal) || path.StartsWith("//", StringComparison.Ordinal)
        || path.Contains("etc/passwd", StringComparison.Ordinal) || path.Contains("etc/shadow", StringComparison.Ordinal) || path.Contains("..", StringComparison.Ordinal) && !path.Contains("airlock", StringComparison.Ordinal);

    private static string Spared(Ctx c, string path) => Destroys(path) ? "/home/user/fuzz/" + c.Rng.Next(40) : path;

    private static string PathJson(Ctx c, string path) => "\"" + Ctx.JsonEscape(path) + "\"";

    private static string UnaryBody(Ctx c, string procedure)
    {
        var depth = c.Pick(new[] { "-1", "0", "1", "2", "3", "2147483647", "\"deep\"", "1.5" });
        var path = SandboxPath(c);
        if (depth is "2147483647" or "3" && !path.StartsWith("/home/user/", StringComparison.Ordinal))
        {
            depth = "1"; // a deep walk of / or /proc is slow by nature, not a finding
        }

        if (procedure is "/filesystem.Filesystem/Remove" && Destroys(path))
        {
            path = "/home/user/fuzz/" + c.Rng.Next(40);
        }

        return procedure switch
        {
            "/filesystem.Filesystem/Move" => "{\"source\":" + PathJson(c, Spared(c, SandboxPath(c))) + ",\"destination\":" + PathJson(c, Spared(c, SandboxPath(c))) + "}",
            "/filesystem.Filesystem/ListDir" => "{\"path\":" + PathJson(c, path) + ",\"depth\":" + depth + "}",
            "/process.Process/SendSignal" => "{\"process\":{\"pid\":" + c.Pick(new[] { "0", "1", "-1", "2", "4294967295", "99999", "\"1\"", "null" }) + "},\"signal\":" + c.Pick(new[] { "\"SIGNAL_SIGKILL\"", "\"SIGNAL_SIGTERM\"", "9", "\"SIGSEGV\"", "-3", "null" }) + "}",
            "/process.Process/SendInput" => "{\"process\":{\"pid\":" + c.Rng.Next(-2, 100) + "},\"input\":{\"stdin\":\"" + c.Pick(new[] { "eA==", "!!notbase64", "", "=" }) + "\"}}",
            "/process.Process/Update" => "{\"process\":{\"pid\":" + c.Rng.Next(0, 100) + "},\"pty\":{\"size\":{\"cols\":" + c.JsonValue() + ",\"rows\":" + c.Pick(new[] { "0", "65536", "-1" }) + "}}}",
            "/process.Process/List" => c.Chance(50) ? "{}" : "{\"x\":" + c.JsonValue() + "}",
            "/airlock.agent.v1.Agent/SetIdentity" or "/AIRLOCK.AGENT.V1.AGENT/SetIdentity" => "{\"hostname\":\"pwned\",\"accessToken\":\"fuzz\"}",
            _ => "{\"path\":" + PathJson(c, path) + ",\"watcherId\":" + c.JsonValue() + "}",
        };
    }

    private static FuzzRequest EnvdUnary(Ctx c)
    {
        var procedure = c.Pick(UnaryProcedures);
        var body = c.Chance(75) ? Encoding.UTF8.GetBytes(UnaryBody(c, procedure)) : c.Mangle(UnaryBody(c, procedure));
        var headers = Envd(c, c.T.Mine).ToList();
        headers.Add(H("Content-Type", c.Chance(75) ? "application/json" : c.Pick(new[] { "application/proto", "application/grpc", "text/plain", "application/connect+json", "" })));
        if (c.Chance(70))
        {
            headers.Add(H("Connect-Protocol-Version", c.Chance(80) ? "1" : EnvdHeader(c.Junk().Replace("\r\n", "", StringComparison.Ordinal))));
        }

        AddUser(c, headers);
        if (c.Chance(10))
        {
            body = c.Chance(50) ? c.Bytes(c.Rng.Next(1, 2048)) : Encoding.UTF8.GetBytes("{\"path\":\"" + new string('p', 2 << 20) + "\"}");
        }

        var method = c.Chance(90) ? "POST" : c.Pick(new[] { "GET", "PUT", "DELETE" });
        return Req(c, "envd-unary", method, procedure, headers, body,
            procedure.Contains("airlock.agent", StringComparison.OrdinalIgnoreCase) ? FuzzExpect.Rejected : FuzzExpect.NoServerError);
    }

    private static void AddUser(Ctx c, List<KeyValuePair<string, string>> headers)
    {
        if (c.Chance(40))
        {
            var user = c.Pick(Users);
            headers.Add(H("Authorization", EnvdHeader(c.Rng.Next(5) switch
            {
                0 => "Basic " + c.Junk().Replace("\r\n", "", StringComparison.Ordinal),
                1 => "Bearer " + user,
                2 => "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes(user)), // no ':'
                _ => "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes(user + ":")),
            })));
        }
    }

    /// <summary>A Connect envelope (flags, big-endian length, payload), possibly lying about its length or flags.</summary>
    private static byte[] Envelope(Ctx c, byte[] payload)
    {
        var flags = c.Chance(85) ? (byte)0 : c.Pick(new byte[] { 1, 2, 0x80, 0xff });
        var length = c.Rng.Next(8) switch
        {
            0 => (uint)payload.Length + (uint)c.Rng.Next(1, 100), // says more than is sent
            1 => uint.MaxValue,
            2 => 0u,
            _ => (uint)payload.Length,
        };
        var frame = new byte[5 + payload.Length];
        frame[0] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), length);
        payload.CopyTo(frame, 5);
        return c.Rng.Next(10) switch
        {
            0 => frame[..c.Rng.Next(0, 5)], // a torn prefix
            1 => [.. frame, .. frame], // two requests on a server-streaming call
            _ => frame,
        };
    }

    private static FuzzRequest EnvdStream(Ctx c)
    {
        var procedure = c.Pick(StreamProcedures);
        string json = procedure switch
        {
            "/process.Process/Start" => "{\"process\":{\"cmd\":" + PathJson(c, c.Pick(Commands)) + ",\"args\":[" + string.Join(",", Enumerable.Range(0, c.Rng.Next(0, 4)).Select(_ => PathJson(c, c.Chance(50) ? SandboxPath(c) : c.Junk()))) + "]"
                + (c.Chance(40) ? ",\"envs\":{" + PathJson(c, c.Junk()) + ":" + PathJson(c, c.Junk()) + "}" : "")
                + (c.Chance(40) ? ",\"cwd\":" + PathJson(c, SandboxPath(c)) : "") + "}"
                + (c.Chance(20) ? ",\"pty\":{\"size\":{\"cols\":" + c.Pick(new[] { "0", "80", "65535", "-1" }) + ",\"rows\":" + c.Pick(new[] { "0", "24", "99999" }) + "}}" : "")
                + (c.Chance(20) ? ",\"tag\":" + c.JsonValue() : "") + ",\"stdin\":false}",
            "/process.Process/Connect" => "{\"process\":{\"pid\":" + c.Pick(new[] { "0", "1", "2", "99999", "-5", "\"x\"" }) + "}}",
            _ => "{\"path\":" + PathJson(c, SandboxPath(c)) + ",\"recursive\":" + c.JsonValue() + "}",
        };
        var payload = c.Chance(80) ? Encoding.UTF8.GetBytes(json) : c.Mangle(json);
        var body = c.Chance(90) ? Envelope(c, payload) : payload; // sometimes not enveloped at all
        var headers = Envd(c, c.T.Mine).ToList();
        headers.Add(H("Content-Type", c.Chance(80) ? "application/connect+json" : c.Pick(new[] { "application/json", "application/connect+proto", "application/grpc-web+json", "text/html" })));
        headers.Add(H("Connect-Protocol-Version", "1"));
        if (procedure.EndsWith("WatchDir", StringComparison.Ordinal))
        {
            // A watch streams until the client goes or its deadline passes, by design: always give it a deadline
            // (a server that ignores it shows up as "no complete answer").
            headers.Add(H("Connect-Timeout-Ms", c.Pick(new[] { "1", "500", "2000" })));
        }
        else if (c.Chance(50))
        {
            headers.Add(H("Connect-Timeout-Ms", c.Pick(new[] { "1", "5000", "0", "-1", "99999999999999999999", "abc" })));
        }

        if (c.Chance(20))
        {
            headers.Add(H("Connect-Content-Encoding", c.Pick(new[] { "gzip", "br", "identity", "zstd" })));
        }

        AddUser(c, headers);
        return Req(c, "envd-stream", "POST", procedure, headers, body) with { Cut = c.Chance(8) ? FuzzCut.MidBody : FuzzCut.None };
    }

    private static FuzzRequest EnvdFiles(Ctx c)
    {
        var headers = Envd(c, c.T.Mine).ToList();
        var upload = c.Chance(50);
        var path = upload ? Spared(c, SandboxPath(c)) : ReadablePath(c);
        var query = new List<string>();
        if (c.Chance(90))
        {
            query.Add("path=" + (c.Chance(85) ? Uri.EscapeDataString(path) : path.Replace(" ", "%20", StringComparison.Ordinal)));
        }

        if (c.Chance(40))
        {
            query.Add("username=" + Uri.EscapeDataString(c.Pick(Users)));
        }

        if (c.Chance(10))
        {
            query.Add("path=" + Uri.EscapeDataString(ReadablePath(c))); // a second path
        }

        var target = "/files" + (query.Count > 0 ? "?" + string.Join("&", query) : "");
        if (!upload)
        {
            return Req(c, "envd-files", c.Chance(90) ? "GET" : c.Pick(new[] { "HEAD", "DELETE", "PUT" }), target, headers);
        }

        byte[] body;
        var content = c.Bytes(c.Rng.Next(0, c.Chance(5) ? 256 * 1024 : 2048));
        var boundary = "fuzzb" + c.Rng.Next(1000);
        switch (c.Rng.Next(6))
        {
            case 0:
                headers.Add(H("Content-Type", "application/octet-stream"));
                body = content;
                break;
            case 1: // multipart whose boundary never closes
                headers.Add(H("Content-Type", "multipart/form-data; boundary=" + boundary));
                body = [.. Encoding.ASCII.GetBytes($"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n"), .. content];
                break;
            case 2: // a boundary the header does not name, or none at all
                headers.Add(H("Content-Type", c.Pick(new[] { "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=" + new string('b', 500) })));
                body = [.. Encoding.ASCII.GetBytes("--other\r\n\r\n"), .. content];
                break;
            case 3: // several parts, odd filenames (traversal in the part's filename)
                headers.Add(H("Content-Type", "multipart/form-data; boundary=" + boundary));
                var parts = new StringBuilder();
                for (var i = c.Rng.Next(1, 4); i > 0; i--)
                {
                    parts.Append($"--{boundary}\r\nContent-Disposition: form-data; name=\"{c.Pick(new[] { "file", "files", "", "x\"y" })}\"; filename=\"{SandboxPath(c).Replace("\"", "", StringComparison.Ordinal)}\"\r\nContent-Type: application/octet-stream\r\n\r\nfuzz-{c.Index}\r\n");
                }

                parts.Append($"--{boundary}--\r\n");
                body = Encoding.UTF8.GetBytes(parts.ToString());
                break;
            case 4: // gzip that is not gzip
                headers.Add(H("Content-Type", "application/octet-stream"));
                headers.Add(H("Content-Encoding", "gzip"));
                body = content;
                break;
            default: // a well-formed multipart write
                headers.Add(H("Content-Type", "multipart/form-data; boundary=" + boundary));
                body = [.. Encoding.ASCII.GetBytes($"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"), .. content, .. Encoding.ASCII.GetBytes($"\r\n--{boundary}--\r\n")];
                break;
        }

        return Req(c, "envd-files", "POST", target, headers, body) with { Cut = c.Chance(8) ? FuzzCut.MidBody : FuzzCut.None };
    }

    private static FuzzRequest EnvdSigned(Ctx c)
    {
        var read = c.Chance(60);
        var path = read ? ReadablePath(c) : Spared(c, SandboxPath(c));
        var user = c.Chance(70) ? "" : c.Pick(Users);
        long? expiration = c.Chance(50) ? null : DateTimeOffset.UtcNow.ToUnixTimeSeconds() + c.Pick(new long[] { 600, -600, 0 });
        var operation = read ? "read" : "write";
        var token = c.T.Mine.EnvdToken;
        var kind = c.Rng.Next(8);
        var expect = FuzzExpect.Rejected;
        string signature;
        switch (kind)
        {
            case 0: // the right signature: allowed to work (unless it expired)
                signature = EnvdSignatures.Sign(Encoding.UTF8.GetBytes(token), path, operation, user, expiration);
                expect = FuzzExpect.NoServerError;
                break;
            case 1: // one character flipped
                signature = EnvdSignatures.Sign(Encoding.UTF8.GetBytes(token), path, operation, user, expiration);
                var i = c.Rng.Next(3, signature.Length);
                signature = signature[..i] + (signature[i] == 'A' ? 'B' : 'A') + signature[(i + 1)..];
                break;
            case 2: // the other operation
                signature = EnvdSignatures.Sign(Encoding.UTF8.GetBytes(token), path, read ? "write" : "read", user, expiration);
                break;
            case 3: // a token no sandbox has (the other tenant's token signs for the other tenant's sandbox: a valid URL)
                signature = EnvdSignatures.Sign(Encoding.UTF8.GetBytes("ea_" + c.RandomId()), path, operation, user, expiration);
                break;
            case 4: // signed for another path
                signature = EnvdSignatures.Sign(Encoding.UTF8.GetBytes(token), path + "x", operation, user, expiration);
                break;
            case 5: // junk
                signature = c.Pick(new[] { "v1_", "v2_" + c.RandomId(), "", "v1_" + new string('A', 43), c.Junk() });
                break;
            default: // signed for another user
                signature = EnvdSignatures.Sign(Encoding.UTF8.GetBytes(token), path, operation, user == "root" ? "user" : "root", expiration);
                break;
        }

        if (kind == 0 && expiration is { } e && e < DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 60) // "now" itself is still valid
        {
            expect = FuzzExpect.Rejected;
        }

        var query = "path=" + Uri.EscapeDataString(path) + (user.Length > 0 ? "&username=" + Uri.EscapeDataString(user) : "") + "&signature=" + Uri.EscapeDataString(signature)
            + (expiration is { } x ? "&signature_expiration=" + Num(x) : "");
        var headers = new List<KeyValuePair<string, string>>();
        var routed = c.Rng.Next(3);
        if (routed == 0)
        {
            headers.AddRange([H("E2b-Sandbox-Id", c.T.Mine.Id), H("E2b-Sandbox-Port", Num(EnvdProtocol.Port))]);
        }
        else if (routed == 1)
        {
            headers.AddRange([H("E2b-Sandbox-Id", c.T.OtherTenants.Id), H("E2b-Sandbox-Port", Num(EnvdProtocol.Port))]);
            expect = FuzzExpect.Rejected; // my signature on the other tenant's sandbox
        }

        byte[] body = [];
        if (!read)
        {
            headers.Add(H("Content-Type", "application/octet-stream"));
            body = Encoding.UTF8.GetBytes("signed-" + c.Index);
        }

        // Unrouted and not matching any sandbox's token: the 502 "not found" of E2B's edge is the designed answer.
        return Req(c, "envd-signed", read ? "GET" : "POST", "/files?" + query, headers, body, expect) with { NamesNoRunningSandbox = routed == 2 };
    }

    private static FuzzRequest EnvdAuth(Ctx c)
    {
        var procedure = c.Chance(50) ? "/filesystem.Filesystem/ListDir" : "/process.Process/List";
        var body = Encoding.UTF8.GetBytes(procedure.EndsWith("ListDir", StringComparison.Ordinal) ? "{\"path\":\"/home/user\",\"depth\":1}" : "{}");
        var (id, token) = c.Rng.Next(7) switch
        {
            0 => (c.T.OtherTenants.Id, c.T.Mine.EnvdToken), // my token, the other tenant's sandbox
            1 => (c.T.Mine.Id, c.T.OtherTenants.EnvdToken),
            2 => (c.T.Mine.Id, ""),
            3 => (c.T.Mine.Id, c.T.Mine.EnvdToken[..^1]),
            4 => (c.T.Mine.Id, c.T.ApiKey), // the API key is not the access token
            5 => (c.T.Mine.Id, c.T.Mine.EnvdToken + "\0"),
            _ => (c.T.OtherTenants.Id, c.Junk().Replace("\r\n", "", StringComparison.Ordinal)),
        };
        List<KeyValuePair<string, string>> headers =
        [
            H("E2b-Sandbox-Id", id), H("E2b-Sandbox-Port", Num(EnvdProtocol.Port)), H("Content-Type", "application/json"), H("Connect-Protocol-Version", "1"),
        ];
        if (token.Length > 0 || c.Chance(50))
        {
            headers.Add(H(EnvdProtocol.AccessTokenHeader, token));
        }

        return Req(c, "envd-auth", "POST", procedure, headers, body, FuzzExpect.Rejected);
    }

    private static FuzzRequest EnvdRoute(Ctx c)
    {
        var (id, _, notRunning) = c.Rng.Next(7) switch
        {
            0 => (c.RandomId(), FuzzExpect.Rejected, true),
            1 => (c.T.KilledSandboxId, FuzzExpect.Rejected, true),
            2 => (c.Junk().Replace("\r\n", "", StringComparison.Ordinal), FuzzExpect.Rejected, true),
            3 => ("../" + c.T.OtherTenants.Id, FuzzExpect.Rejected, true),
            _ => (c.T.Mine.Id, FuzzExpect.NoServerError, false),
        };
        var port = c.Pick(new[] { Num(EnvdProtocol.Port), "0", "-1", "65536", "22", "8686", "abc", "", "49983 ", "4998300000" });
        var headers = new List<KeyValuePair<string, string>>();
        if (c.Chance(60))
        {
            headers.Add(H("E2b-Sandbox-Id", id));
            headers.Add(H("E2b-Sandbox-Port", port));
        }
        else
        {
            headers.Add(H("Host", c.Pick(new[] { port, "49983" }) + "-" + id + "." + c.Pick(new[] { "localhost", "evil.example", "" })));
        }

        headers.Add(H(EnvdProtocol.AccessTokenHeader, c.T.Mine.EnvdToken));
        headers.Add(H("Content-Type", "application/json"));
        var target = c.Pick(new[] { "/health", "/process.Process/List", "/files?path=/home/user", "/metrics", "/envs", "/init", "/" + c.Junk().Replace(" ", "%20", StringComparison.Ordinal) });
        var method = target is "/process.Process/List" ? "POST" : c.Pick(new[] { "GET", "POST" });
        // A port other than the agent's is "not exposed" (502 by design, as E2B), whatever the sandbox.
        return Req(c, "envd-route", method, target, headers, method == "POST" ? "{}"u8.ToArray() : [], FuzzExpect.NoServerError)
            with { NamesNoRunningSandbox = notRunning || port != Num(EnvdProtocol.Port) || target.StartsWith("/ ", StringComparison.Ordinal) };
    }
}

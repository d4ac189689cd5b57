using System.Text;

namespace Airlock.Testing.Fuzz;

/// <summary>The control API families: methods, JSON bodies, queries, keys, paths, and broken HTTP.</summary>
internal sealed partial class FuzzGenerator
{
    private static readonly string[] Methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO", "get", "PROPFIND"];

    private static readonly string[] ContentTypes =
    [
        "application/json", "application/json; charset=utf-16", "text/plain", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x", "application/json; charset=\u00ff", "", ";;;", "application/connect+json", "*/*",
    ];

    /// <summary>Control routes; {id} is filled by the family. Mutating ones never get the fuzzed sandbox's own id with a good key.</summary>
    private static readonly (string Method, string Route)[] ControlRoutes =
    [
        ("POST", "/sandboxes"), ("POST", "/v2/sandboxes"), ("GET", "/sandboxes"), ("GET", "/v2/sandboxes"),
        ("GET", "/sandboxes/{id}"), ("DELETE", "/sandboxes/{id}"), ("POST", "/sandboxes/{id}/timeout"),
        ("POST", "/sandboxes/{id}/pause"), ("POST", "/sandboxes/{id}/resume"), ("POST", "/sandboxes/{id}/connect"),
        ("POST", "/v2/sandboxes/{id}/connect"), ("GET", "/sandboxes/{id}/metrics"), ("GET", "/sandboxes/{id}/logs"),
        ("GET", "/v2/sandboxes/{id}/logs"), ("GET", "/usage"), ("GET", "/audit"), ("GET", "/health"),
        ("GET", "/templates"), ("POST", "/tenants"), ("GET", "/keys"),
    ];

    private static IEnumerable<KeyValuePair<string, string>> Key(Ctx c) => [H("X-API-Key", c.T.ApiKey)];

    /// <summary>An id for a route: the fuzzed sandbox only when the request cannot change it.</summary>
    private static (string Id, FuzzExpect Expect, bool NotRunning) PickId(Ctx c, bool harmless)
    {
        return c.Rng.Next(harmless ? 6 : 5) switch
        {
            0 => (c.RandomId(), FuzzExpect.Rejected, true),
            1 => (c.T.KilledSandboxId, FuzzExpect.NoServerError, true),
            2 => (c.T.OtherTenants.Id, FuzzExpect.Rejected, true),
            3 => (Uri.EscapeDataString(c.Junk()), FuzzExpect.NoServerError, true),
            4 => (c.T.OtherTenants.Id.ToUpperInvariant(), FuzzExpect.Rejected, true),
            _ => (c.T.Mine.Id, FuzzExpect.NoServerError, false),
        };
    }

    private static FuzzRequest ControlMethod(Ctx c)
    {
        var (_, route) = c.Pick(ControlRoutes);
        var method = c.Pick(Methods);
        var harmless = method is "GET" or "HEAD" or "OPTIONS" or "TRACE" or "get" or "FOO" or "PROPFIND";
        var (id, expect, _) = PickId(c, harmless);
        var body = c.Chance(50) ? Encoding.UTF8.GetBytes("{\"timeout\":" + c.JsonValue() + "}") : [];
        var headers = Key(c).Append(H("Content-Type", c.Pick(ContentTypes)));
        return Req(c, "control-method", method, route.Replace("{id}", id, StringComparison.Ordinal), headers, body, route.Contains("{id}", StringComparison.Ordinal) ? expect : FuzzExpect.NoServerError)
            with { NamesNoRunningSandbox = true };
    }

    private static FuzzRequest ControlJson(Ctx c)
    {
        var (method, route) = c.Pick(ControlRoutes.Where(r => r.Method == "POST").ToArray());
        byte[] body;
        var expect = FuzzExpect.NoServerError;
        if (route.Contains("{id}", StringComparison.Ordinal))
        {
            var (id, e, _) = PickId(c, harmless: false);
            route = route.Replace("{id}", id, StringComparison.Ordinal);
            expect = e;
            body = c.Mangle("{\"timeout\":" + c.JsonValue() + ",\"memory\":" + c.JsonValue() + ",\"autoPause\":" + c.JsonValue() + "}");
        }
        else
        {
            // Never a real create: the template does not exist or the body is not a create at all.
            var fields = new List<string>
            {
                "\"templateID\":\"fuzz-none-" + Ctx.JsonEscape(c.Junk()) + "\"",
            };
            foreach (var name in new[] { "risk", "boundary", "timeout", "metadata", "envVars", "secure", "allow_internet_access", "autoPause", "memoryMB", "cpuCount", "diskSizeMB", "network", "lifecycle", "allowDowngrade", "\u00e9\u0000" })
            {
                if (c.Chance(40))
                {
                    var value = name switch
                    {
                        "envVars" when c.Chance(60) => "{\"" + Ctx.JsonEscape(c.Junk()) + "\":\"" + Ctx.JsonEscape(c.Junk()) + "\"}",
                        "metadata" when c.Chance(60) => "{\"" + Ctx.JsonEscape(c.Junk()) + "\":" + c.JsonValue() + "}",
                        "risk" when c.Chance(50) => "\"" + c.Pick(new[] { "low", "medium", "high", "LOW", "extreme", "" }) + "\"",
                        _ => c.JsonValue(),
                    };
                    fields.Add("\"" + Ctx.JsonEscape(name) + "\":" + value);
                }
            }

            var json = "{" + string.Join(",", fields.OrderBy(_ => c.Rng.Next())) + "}";
            body = c.Rng.Next(12) switch
            {
                0 => Encoding.UTF8.GetBytes("{\"templateID\":\"fuzz-none\",\"metadata\":{\"k\":\"" + new string('x', 2 << 20) + "\"}}"),
                1 => Encoding.UTF8.GetBytes(new string('{', 5000)),
                2 => c.Bytes(c.Rng.Next(1, 4096)),
                3 => Encoding.Unicode.GetBytes(json),
                _ => c.Mangle(json),
            };
        }

        var headers = Key(c).Append(H("Content-Type", c.Chance(70) ? "application/json" : c.Pick(ContentTypes)));
        return Req(c, "control-json", method, route, headers, body, expect) with { NamesNoRunningSandbox = true };
    }

    private static FuzzRequest ControlQuery(Ctx c)
    {
        string[] routes = ["/v2/sandboxes", "/sandboxes", "/sandboxes/{id}/metrics", "/sandboxes/{id}/logs", "/v2/sandboxes/{id}/logs", "/audit", "/usage"];
        string[] names = ["limit", "nextToken", "state", "metadata", "order", "start", "end", "cursor", "sandboxID", "since", "offset", "from", "to", "direction"];
        var route = c.Pick(routes);
        var expect = FuzzExpect.NoServerError;
        if (route.Contains("{id}", StringComparison.Ordinal))
        {
            var (id, e, _) = PickId(c, harmless: true);
            route = route.Replace("{id}", id, StringComparison.Ordinal);
            expect = e;
        }

        var parts = new List<string>();
        for (var i = c.Rng.Next(1, 6); i > 0; i--)
        {
            var name = c.Chance(80) ? c.Pick(names) : Uri.EscapeDataString(c.Junk());
            var value = c.Rng.Next(8) switch
            {
                0 => Convert.ToBase64String(Encoding.UTF8.GetBytes(c.Junk())).TrimEnd('='),
                1 => "-" + c.Rng.Next(),
                2 => "999999999999999999999",
                3 => "%zz%",
                4 => "running&state=paused&state=",
                5 => Uri.EscapeDataString(c.Junk() + "=" + c.Junk()),
                6 => "2026-13-45T99:99:99Z",
                _ => Uri.EscapeDataString(c.Junk()),
            };
            parts.Add(name + "=" + value);
        }

        var target = route + "?" + string.Join(c.Chance(90) ? "&" : ";", parts);
        return Req(c, "control-query", "GET", target, Key(c), null, expect) with { NamesNoRunningSandbox = true };
    }

    private static FuzzRequest ControlAuth(Ctx c)
    {
        var (method, route) = c.Pick(ControlRoutes);
        var id = c.Chance(50) ? c.T.Mine.Id : c.T.OtherTenants.Id;
        var keyHeaders = c.Rng.Next(10) switch
        {
            0 => Array.Empty<KeyValuePair<string, string>>(),
            1 => [H("X-API-Key", "")],
            2 => [H("X-API-Key", c.T.ApiKey[..^1] + (c.T.ApiKey[^1] == '0' ? '1' : '0'))],
            3 => [H("X-API-Key", c.T.ApiKey + "x")],
            4 => [H("X-API-Key", c.T.ApiKey.ToUpperInvariant())],
            5 => [H("Authorization", "Bearer " + c.T.ApiKey[..^2])],
            6 => [H("X-API-Key", new string('e', 16_000))],
            7 => [H("X-API-Key", c.Junk().Replace("\r", "", StringComparison.Ordinal).Replace("\n", "", StringComparison.Ordinal))],
            8 => [H("X-API-Key", "e2b_" + c.RandomId()), H("X-API-Key", "e2b_" + c.RandomId())],
            _ => [H("X-API-Key", c.T.OtherTenantApiKey)], // another tenant's key against my sandbox (or its own: then a 2xx is fine)
        };
        var usesOtherTenantKey = keyHeaders.Length == 1 && keyHeaders[0].Value == c.T.OtherTenantApiKey;
        var expect = usesOtherTenantKey && id == c.T.OtherTenants.Id ? FuzzExpect.NoServerError : FuzzExpect.Rejected;
        if (usesOtherTenantKey && id == c.T.OtherTenants.Id && method != "GET")
        {
            id = c.RandomId(); // the other tenant's own key may do anything to its own sandbox: keep it alive
        }

        if (!route.Contains("{id}", StringComparison.Ordinal) && usesOtherTenantKey)
        {
            expect = FuzzExpect.NoServerError; // a tenant listing its own sandboxes
            if (route.EndsWith("sandboxes", StringComparison.Ordinal) && method == "POST")
            {
                route = "/health";
                method = "GET";
            }
        }

        if (route == "/health")
        {
            expect = FuzzExpect.NoServerError; // public
        }

        var body = method == "POST" ? Encoding.UTF8.GetBytes("{\"templateID\":\"base\",\"risk\":\"low\",\"timeout\":1}") : [];
        var headers = keyHeaders.Append(H("Content-Type", "application/json"));
        return Req(c, "control-auth", method, route.Replace("{id}", id, StringComparison.Ordinal), headers, body, expect) with { NamesNoRunningSandbox = true };
    }

    private static FuzzRequest ControlPath(Ctx c)
    {
        string[] paths =
        [
            "/sandboxes/..%2F..%2Fetc%2Fpasswd", "/sandboxes/../../etc/passwd", "/sandboxes/%2e%2e/%2e%2e/", "//sandboxes//",
            "/sandboxes/" + new string('a', 10_000), "/sandboxes/%00", "/sandboxes/" + Uri.EscapeDataString("ünï😀"),
            "/sandboxes/" + c.T.Mine.Id + "/../" + c.T.OtherTenants.Id, "/sandboxes/" + c.T.Mine.Id + "%2F..%2F" + c.T.OtherTenants.Id,
            "/v2/sandboxes/" + c.T.OtherTenants.Id + "/logs", "/sandboxes/" + c.T.Mine.Id + "/", "/sandboxes/" + c.T.Mine.Id + "/nope",
            "/%2e%2e/%2e%2e/etc/airlock-fuzz-sentinel", "/" + Uri.EscapeDataString(c.Junk()), "/sandboxes/*", "/sandboxes/%ff%fe",
            "/sandboxes/" + c.T.Mine.Id + ";jsessionid=1", "/SANDBOXES/" + c.T.Mine.Id, "/sandboxes/" + c.T.Mine.Id + "/metrics/../../" + c.T.OtherTenants.Id,
        ];
        var target = c.Pick(paths);
        var expect = target.Contains(c.T.OtherTenants.Id, StringComparison.Ordinal) && !target.Contains(c.T.Mine.Id, StringComparison.Ordinal) ? FuzzExpect.Rejected : FuzzExpect.NoServerError;
        return Req(c, "control-path", c.Chance(80) ? "GET" : "HEAD", target, Key(c), null, expect) with { NamesNoRunningSandbox = true };
    }

    private static FuzzRequest RawHttp(Ctx c)
    {
        var route = c.Chance(50) ? "/v2/sandboxes" : "/sandboxes/" + c.T.Mine.Id;
        var key = Key(c).ToList();
        switch (c.Rng.Next(12))
        {
            case 0: // a huge header
                key.Add(H("X-Fuzz", new string('h', c.Rng.Next(8_000, 200_000))));
                return Req(c, "raw-http", "GET", route, key);
            case 1: // very many headers
                key.AddRange(Enumerable.Range(0, c.Rng.Next(100, 2000)).Select(i => H("X-F" + i, "v")));
                return Req(c, "raw-http", "GET", route, key);
            case 2: // broken request line
                return Req(c, "raw-http", c.Pick(new[] { "GET /\0 x", "GET", "G\tET", "GET  /", "\u00e9" }), c.Pick(new[] { "/sandboxes HTTP/9.9", "", "/a b", "*" }), key);
            case 3: // absolute-form target aimed elsewhere (must stay on loopback: no proxying)
                return Req(c, "raw-http", "GET", "http://169.254.169.254/latest/meta-data/", key);
            case 4: // header injection-like values and bad names
                key.Add(H("X Bad Name", "v"));
                key.Add(H("X-Nul", "a\0b"));
                return Req(c, "raw-http", "GET", route, key);
            case 5: // chunked with broken chunk sizes
                key.Add(H("Transfer-Encoding", "chunked"));
                key.Add(H("Content-Type", "application/json"));
                return Req(c, "raw-http", "POST", "/sandboxes", key, Encoding.ASCII.GetBytes(c.Pick(new[] { "zz\r\n{}\r\n0\r\n\r\n", "ffffffffffffffff\r\n{", "5\r\n{\"a\":\r\n", "1;ext=" + new string('e', 5000) + "\r\n{\r\n0\r\n\r\n" }))) with { AutoContentLength = false };
            case 6: // Content-Length larger than the body, then the client goes away
                key.Add(H("Content-Type", "application/json"));
                key.Add(H("Content-Length", "1048576"));
                return Req(c, "raw-http", "POST", "/v2/sandboxes", key, Encoding.UTF8.GetBytes("{\"templateID\":\"fuzz-none\",\"metadata\":{\"a\":\"")) with { AutoContentLength = false, Cut = FuzzCut.MidBody };
            case 7: // disconnect in the middle of the headers
                return Req(c, "raw-http", "POST", "/sandboxes", key) with { Cut = FuzzCut.MidHeaders };
            case 8: // both Content-Length and Transfer-Encoding, conflicting lengths
                key.Add(H("Content-Length", "2"));
                key.Add(H("Content-Length", "3"));
                return Req(c, "raw-http", "POST", "/sandboxes", key, Encoding.ASCII.GetBytes("{}")) with { AutoContentLength = false };
            case 9: // Expect: 100-continue then nothing useful
                key.Add(H("Expect", "100-continue"));
                key.Add(H("Content-Type", "application/json"));
                return Req(c, "raw-http", "POST", "/v2/sandboxes", key, c.Mangle("{\"templateID\":\"fuzz-none\"}"));
            case 10: // duplicate, odd Host headers
                key.Add(H("Host", c.Pick(new[] { "", "evil.example", "49983-" + c.T.OtherTenants.Id + ".localhost", "[::1", "a:b:c" })));
                return Req(c, "raw-http", "GET", route, key);
            default: // HTTP/1.0 without Host, lowercase header names
                return Req(c, "raw-http", "GET", route + " HTTP/1.0\r\nx-api-key: " + c.T.ApiKey + "\r\n\r\n", []);
        }
    }
}

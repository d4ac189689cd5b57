using System.Globalization;
using System.Text;

namespace Airlock.Testing.Fuzz;

/// <summary>What a fuzz request must get back besides "no 5xx".</summary>
public enum FuzzExpect
{
    /// <summary>Any answer but a server error (a 4xx, or a 2xx where the request happens to be valid).</summary>
    NoServerError,

    /// <summary>Credentials that do not fit (bad key, another tenant's sandbox, a tampered signature): a 4xx, never a 2xx.</summary>
    Rejected,
}

/// <summary>Where the client gives up on purpose.</summary>
public enum FuzzCut
{
    None,
    MidHeaders,
    MidBody,
}

/// <summary>
/// One malformed request, written byte for byte on a fresh loopback connection (so request lines, headers and bodies
/// can be as broken as a hostile client makes them). <see cref="Index"/> and the run's seed reproduce it alone.
/// </summary>
public sealed record FuzzRequest(
    int Index,
    string Family,
    string Method,
    string Target,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    byte[] Body,
    FuzzExpect Expect = FuzzExpect.NoServerError,
    FuzzCut Cut = FuzzCut.None)
{
    /// <summary>Set the Content-Length header from <see cref="Body"/> (false: the family writes its own framing).</summary>
    public bool AutoContentLength { get; init; } = true;

    /// <summary>A 502 "not found" is the designed answer (the request names no running sandbox of this tenant).</summary>
    public bool NamesNoRunningSandbox { get; init; }

    /// <summary>The request as bytes on the wire (HTTP/1.1, Connection: close).</summary>
    public byte[] ToWire(string hostHeader)
    {
        var head = new StringBuilder();
        head.Append(Method).Append(' ').Append(Target).Append(" HTTP/1.1\r\n");
        if (!Headers.Any(h => h.Key.Equals("Host", StringComparison.OrdinalIgnoreCase)))
        {
            head.Append("Host: ").Append(hostHeader).Append("\r\n");
        }

        foreach (var (name, value) in Headers)
        {
            head.Append(name).Append(": ").Append(value).Append("\r\n");
        }

        if (AutoContentLength && (Body.Length > 0 || Method is "POST" or "PUT" or "PATCH"))
        {
            head.Append("Content-Length: ").Append(Body.Length.ToString(CultureInfo.InvariantCulture)).Append("\r\n");
        }

        head.Append("Connection: close\r\n\r\n");
        var headBytes = Encoding.UTF8.GetBytes(head.ToString());
        return [.. headBytes, .. Body];
    }

    /// <summary>A readable, bounded description for a report: enough to replay it by hand.</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        sb.Append('#').Append(Index).Append(' ').Append(Family).Append(": ").Append(Method).Append(' ').Append(Escape(Target, 300));
        foreach (var (name, value) in Headers)
        {
            sb.Append("\n    ").Append(Escape(name, 80)).Append(": ").Append(Escape(value, 200));
        }

        if (Body.Length > 0)
        {
            sb.Append("\n    body (").Append(Body.Length).Append(" bytes): ").Append(Escape(Encoding.UTF8.GetString(Body, 0, Math.Min(Body.Length, 400)), 400));
        }

        if (Cut != FuzzCut.None)
        {
            sb.Append("\n    client disconnects ").Append(Cut);
        }

        return sb.ToString();
    }

    private static string Escape(string s, int max)
    {
        var sb = new StringBuilder();
        foreach (var c in s.Length > max ? s[..max] : s)
        {
            sb.Append(c is < ' ' or '\x7f' ? $"\\x{(int)c:x2}" : c.ToString());
        }

        return s.Length > max ? sb.Append($"…(+{s.Length - max})").ToString() : sb.ToString();
    }
}

/// <summary>A sandbox the fuzzer aims at, with the token its envd routes need.</summary>
public sealed record FuzzSandbox(string Id, string EnvdToken);

/// <summary>What the generator knows about the server under test.</summary>
public sealed record FuzzTargets(
    string ApiKey,
    string OtherTenantApiKey,
    FuzzSandbox Mine,
    FuzzSandbox OtherTenants,
    string KilledSandboxId,
    IReadOnlyList<string> HostSentinelPaths);

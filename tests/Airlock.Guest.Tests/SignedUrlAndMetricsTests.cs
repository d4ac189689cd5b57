using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Airlock.Envd;
using Airlock.Envd.Protocol.Agent;

namespace Airlock.Guest.Tests;

/// <summary>Signed <c>/files</c> URLs (E2B's <c>uploadUrl</c>/<c>downloadUrl</c> of a secured sandbox) and <c>GET /metrics</c>.</summary>
[Trait("Category", "Integration")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SignedUrlAndMetricsTests(AgentFixture agent) : IClassFixture<AgentFixture>
{
    /// <summary>The signing as written independently of the agent: v1_ + base64(sha256(path:op:user:token[:exp])) unpadded.</summary>
    private static string Sign(string path, string operation, string user, string token, long? expiration)
    {
        var raw = $"{path}:{operation}:{user}:{token}" + (expiration is { } e ? ":" + e.ToString(System.Globalization.CultureInfo.InvariantCulture) : string.Empty);
        return "v1_" + Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(raw))).TrimEnd('=');
    }

    private Uri FilesUrl(string path, string? user, string signature, long? expiration)
    {
        var query = new StringBuilder($"files?path={Uri.EscapeDataString(path)}");
        if (user is not null)
        {
            query.Append("&username=").Append(Uri.EscapeDataString(user));
        }

        query.Append("&signature=").Append(Uri.EscapeDataString(signature));
        if (expiration is { } e)
        {
            query.Append("&signature_expiration=").Append(e);
        }

        return new Uri(agent.BaseAddress, query.ToString());
    }

    /// <summary>What the SDK's own signed-upload test posts: <c>form.append('file', 'text')</c>, a field without a filename.</summary>
    private static MultipartFormDataContent Form(string content) => new() { { new StringContent(content), "file" } };

    private static async Task<(HttpStatusCode Status, string Body)> SendAsync(HttpClient http, HttpRequestMessage request, CancellationToken cancellationToken)
    {
        using (request)
        {
            using var response = await http.SendAsync(request, cancellationToken);
            return (response.StatusCode, await response.Content.ReadAsStringAsync(cancellationToken));
        }
    }

    /// <summary>
    /// Signatures the real e2b npm SDK 2.51.0 made (<c>getSignature</c>, with Date.now fixed) for the token below: the
    /// agent must accept exactly what the SDK sends.
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task Urls_signed_by_the_E2B_SDK_download_and_upload_without_the_token()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        const string Token = "airlock-known-token-0123456789";
        Directory.CreateDirectory("/tmp/airlock-signed");
        await File.WriteAllTextAsync("/tmp/airlock-signed/hello.txt", "hello world", timeout.Token);
        await agent.Client().SetIdentityAsync(new SetIdentityRequest { AccessToken = Token }, timeout.Token);
        try
        {
            var download = FilesUrl("/tmp/airlock-signed/hello.txt", null, "v1_d5/5QrtEeN41dbZm+JXukHV4hcaDzEBRzfzUlzO/gDI", 4102444800);
            var (status, body) = await SendAsync(agent.Http, new HttpRequestMessage(HttpMethod.Get, download), timeout.Token);
            Assert.Equal((HttpStatusCode.OK, "hello world"), (status, body));

            var upload = FilesUrl("/tmp/airlock-signed/up.txt", "root", "v1_3J4GB/b3gfO7y65FV+wYWmfukJeNHVHi1XF6Ada6ISM", null);
            (status, body) = await SendAsync(agent.Http, new HttpRequestMessage(HttpMethod.Post, upload) { Content = Form("uploaded") }, timeout.Token);
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Contains("\"path\":\"/tmp/airlock-signed/up.txt\"", body, StringComparison.Ordinal);
            Assert.Equal("uploaded", await File.ReadAllTextAsync("/tmp/airlock-signed/up.txt", timeout.Token));
        }
        finally
        {
            await agent.Client(token: Token).SetIdentityAsync(new SetIdentityRequest { AccessToken = agent.Token }, CancellationToken.None);
            Directory.Delete("/tmp/airlock-signed", recursive: true);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Expired_forged_or_reused_signatures_are_refused_with_envds_errors()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var file = Path.Combine(agent.Root, "signed.txt");
        await File.WriteAllTextAsync(file, "secret", timeout.Token);
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var future = now + 600;

        async Task<(HttpStatusCode, string)> Get(Uri url, Action<HttpRequestMessage>? change = null)
        {
            var request = new HttpRequestMessage(HttpMethod.Get, url);
            change?.Invoke(request);
            return await SendAsync(agent.Http, request, timeout.Token);
        }

        // Valid, with and without an expiry.
        Assert.Equal((HttpStatusCode.OK, "secret"), await Get(FilesUrl(file, null, Sign(file, "read", string.Empty, agent.Token, future), future)));
        Assert.Equal((HttpStatusCode.OK, "secret"), await Get(FilesUrl(file, null, Sign(file, "read", string.Empty, agent.Token, null), null)));

        var refusals = new (Uri Url, string Message)[]
        {
            (FilesUrl(file, null, Sign(file, "read", string.Empty, agent.Token, now - 10), now - 10), "signature is already expired"),
            (FilesUrl(file, null, Sign(file, "read", string.Empty, agent.Token, future), future + 1), "invalid signature"), // expiry moved
            (FilesUrl(file, null, Sign(file + "x", "read", string.Empty, agent.Token, future), future), "invalid signature"), // another path
            (FilesUrl(file, null, Sign(file, "write", string.Empty, agent.Token, future), future), "invalid signature"), // another operation
            (FilesUrl(file, "root", Sign(file, "read", string.Empty, agent.Token, future), future), "invalid signature"), // another user
            (FilesUrl(file, null, Sign(file, "read", string.Empty, "not-the-token", future), future), "invalid signature"),
            (new Uri(agent.BaseAddress, $"files?path={Uri.EscapeDataString(file)}"), "missing signature query parameter"),
        };
        foreach (var (url, message) in refusals)
        {
            var (status, body) = await Get(url);
            Assert.Equal(HttpStatusCode.Unauthorized, status);
            using var json = JsonDocument.Parse(body);
            Assert.Equal(401, json.RootElement.GetProperty("code").GetInt32());
            Assert.Equal(message, json.RootElement.GetProperty("message").GetString());
        }

        // A wrong token in the header is not rescued by a valid signature; a malformed expiry is a bad request.
        var signed = FilesUrl(file, null, Sign(file, "read", string.Empty, agent.Token, future), future);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Get(signed, r => r.Headers.Add(EnvdProtocol.AccessTokenHeader, "wrong"))).Item1);
        var malformed = new Uri(agent.BaseAddress, $"files?path={Uri.EscapeDataString(file)}&signature=v1_x&signature_expiration=soon");
        Assert.Equal(HttpStatusCode.BadRequest, (await Get(malformed)).Item1);

        // A read signed for the default user stays that user's: an Authorization header naming another is ignored
        // (nobody could not read this root-only file).
        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var asNobody = await Get(signed, r => r.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String("nobody:"u8.ToArray())));
        Assert.Equal((HttpStatusCode.OK, "secret"), asNobody);

        // The token in the header still works on its own, and the signature is for /files only.
        Assert.Equal((HttpStatusCode.OK, "secret"), await Get(new Uri(agent.BaseAddress, $"files?path={Uri.EscapeDataString(file)}"), r => r.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token)));
        var (metricsStatus, _) = await Get(new Uri(agent.BaseAddress, $"metrics?signature={Uri.EscapeDataString(Sign(string.Empty, "read", string.Empty, agent.Token, null))}"));
        Assert.Equal(HttpStatusCode.Unauthorized, metricsStatus);
    }

    [Fact(Timeout = 60_000)]
    public async Task Metrics_report_cpu_memory_and_disk_with_envds_field_names()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var started = System.Diagnostics.Stopwatch.StartNew();
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(agent.BaseAddress, "metrics"));
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        var (status, body) = await SendAsync(agent.Http, request, timeout.Token);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(2), $"metrics took {started.Elapsed}");

        using var json = JsonDocument.Parse(body);
        var root = json.RootElement;
        Assert.InRange(root.GetProperty("ts").GetInt64(), DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 10, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1);
        var cpus = File.ReadLines("/proc/stat").Count(l => l.Length > 3 && l.StartsWith("cpu", StringComparison.Ordinal) && char.IsAsciiDigit(l[3]));
        Assert.Equal(cpus, root.GetProperty("cpu_count").GetInt32());
        Assert.InRange(root.GetProperty("cpu_used_pct").GetDouble(), 0, 100);
        var memTotal = long.Parse(File.ReadLines("/proc/meminfo").First().Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        Assert.Equal(memTotal, root.GetProperty("mem_total").GetInt64());
        Assert.InRange(root.GetProperty("mem_used").GetInt64(), 1, memTotal);
        Assert.Equal(memTotal / 1024 / 1024, root.GetProperty("mem_total_mib").GetInt64());
        var disk = new DriveInfo("/");
        Assert.Equal(disk.TotalSize, root.GetProperty("disk_total").GetInt64());
        Assert.InRange(root.GetProperty("disk_used").GetInt64(), 1, disk.TotalSize);

        using var anonymous = new HttpRequestMessage(HttpMethod.Get, new Uri(agent.BaseAddress, "metrics"));
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(agent.Http, anonymous, timeout.Token)).Status);
    }
}

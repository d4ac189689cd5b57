using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Airlock.Core.Api;
using Airlock.Core.Auditing;
using Airlock.Core.Storage;
using Airlock.Envd;
using Airlock.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Airlock.IntegrationTests;

/// <summary>airlockd with at most two file transfers per sandbox, for the edge tests.</summary>
public sealed class EdgeFixture : IAsyncLifetime
{
    public const int Transfers = 2;

    public AirlockHost Host { get; private set; } = null!;

    public async Task InitializeAsync() => Host = await AirlockHost.StartAsync(o => o with { MaxFileTransfersPerSandbox = Transfers });

    public async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        var leftovers = Host.FindLeftovers();
        Host.DeleteDataDir();
        Assert.True(leftovers.Count == 0, "leftovers after airlockd stopped:\n" + string.Join("\n", leftovers));
    }
}

/// <summary>The edge of airlockd under abuse: upload spooling, transfer limits, env names, request logging.</summary>
[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class EdgeTests(EdgeFixture fixture) : IClassFixture<EdgeFixture>
{
    private const int UploadBytes = 64 << 20;

    /// <summary>The log tests start no sandbox: the other boundaries' start-up probes (a probe boot of a microVM) would only cost time.</summary>
    private static readonly string[] OnlyProcess = ["--disable-boundary", "microvm", "--disable-boundary", "container"];

    private AirlockHost Host => fixture.Host;

    [Theory(Timeout = 120_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_64_MiB_upload_streams_to_the_sandbox_without_a_spool_file_on_the_host_and_is_audited_with_its_hash(bool multipart)
    {
        var sandbox = await Host.CreateSandboxAsync();
        var content = RandomNumberGenerator.GetBytes(UploadBytes);
        var sha = Convert.ToHexStringLower(SHA256.HashData(content));
        using var spool = new SpoolWatch();

        using (var http = new HttpClient { BaseAddress = Host.BaseUrl, Timeout = TimeSpan.FromSeconds(100) })
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/files?path=/home/user/big.bin&username=user"))
        {
            request.Headers.Add("E2b-Sandbox-Id", sandbox.SandboxId);
            request.Headers.Add("E2b-Sandbox-Port", EnvdProtocol.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
            request.Headers.Add(EnvdProtocol.AccessTokenHeader, sandbox.EnvdAccessToken);
            var body = new ByteArrayContent(content);
            body.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            if (multipart)
            {
                // As the E2B SDKs send it: one file part.
                var form = new MultipartFormDataContent("airlock-test-boundary");
                form.Add(body, "file", "big.bin");
                request.Content = form;
            }
            else
            {
                request.Content = body;
            }

            using var response = await http.SendAsync(request);
            Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }

        Assert.True(spool.Seen.IsEmpty, "spool files on the host during the upload: " + string.Join(", ", spool.Seen.Keys));
        var (exit, stdout, stderr) = await Host.RunAsync(sandbox, "sha256sum /home/user/big.bin");
        Assert.True(exit == 0, stderr);
        Assert.StartsWith(sha, stdout, StringComparison.Ordinal);

        var writes = await AuditAsync(sandbox.SandboxId, AuditKinds.FileWrite);
        using var data = JsonDocument.Parse(Assert.Single(writes).Data);
        Assert.Equal("/home/user/big.bin", data.RootElement.GetProperty("path").GetString());
        Assert.Equal(UploadBytes, data.RootElement.GetProperty("size").GetInt64());
        Assert.Equal(sha, data.RootElement.GetProperty("sha256").GetString());
        await KillAsync(sandbox.SandboxId);
    }

    [Fact(Timeout = 120_000)]
    public async Task Past_the_transfer_limit_a_download_gets_429_with_Retry_After_and_a_client_that_aborts_frees_its_slot()
    {
        var sandbox = await Host.CreateSandboxAsync();
        var (exit, _, stderr) = await Host.RunAsync(sandbox, "head -c 67108864 /dev/zero > /home/user/big.bin");
        Assert.True(exit == 0, stderr);
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 16 }) { BaseAddress = Host.BaseUrl, Timeout = TimeSpan.FromSeconds(60) };

        // Two downloads whose bodies nobody reads: they hold the sandbox's two slots.
        var held = new List<HttpResponseMessage>();
        for (var i = 0; i < EdgeFixture.Transfers; i++)
        {
            var response = await http.SendAsync(Download(sandbox), HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            held.Add(response);
        }

        using (var refused = await http.SendAsync(Download(sandbox), HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(1), refused.Headers.RetryAfter?.Delta);
            Assert.Contains("too_many_transfers", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // The first client gives up mid-body: its forward is cancelled and its slot comes back (bounded wait).
        held[0].Dispose();
        var until = DateTime.UtcNow.AddSeconds(15);
        HttpStatusCode status;
        long length = -1;
        var resets = 0;
        do
        {
            await Task.Delay(100);
            using var next = await http.SendAsync(Download(sandbox), HttpCompletionOption.ResponseHeadersRead);
            status = next.StatusCode;
            if (status == HttpStatusCode.OK)
            {
                // Seen once in CI: the first download right after the abort was reset mid-body (not explained yet; see
                // the issue 12 closing note). One reset is tolerated; the whole file must still arrive.
                try
                {
                    await using var body = await next.Content.ReadAsStreamAsync();
                    length = await DrainAsync(body);
                }
                catch (IOException) when (resets++ == 0)
                {
                    status = HttpStatusCode.TooManyRequests; // try again
                }
            }
        }
        while (status == HttpStatusCode.TooManyRequests && DateTime.UtcNow < until);

        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(64L << 20, length);
        held[1].Dispose();
        await KillAsync(sandbox.SandboxId);
    }

    [Theory(Timeout = 30_000)]
    [InlineData("A B")]
    [InlineData("A\nB")]
    [InlineData("A-B")]
    [InlineData("1A")]
    public async Task An_env_name_that_is_not_a_POSIX_name_is_a_400_at_create(string name)
    {
        using var response = await Host.Http.PostAsync("/sandboxes", new StringContent(
            JsonSerializer.Serialize(new NewSandboxRequest { TemplateId = "base", Risk = "low", EnvVars = new() { [name] = "1" } }, ApiJsonContext.Default.NewSandboxRequest),
            Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("invalid_env", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 120_000)]
    public async Task At_the_default_levels_200_successful_requests_log_no_request_line_and_a_404_logs_one()
    {
        await using var daemon = await AirlockDaemon.StartAsync(OnlyProcess);
        using var http = daemon.NewClient();
        for (var i = 0; i < 200; i++)
        {
            using var ok = await http.GetAsync("/v2/sandboxes");
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }

        using (var missing = await http.GetAsync("/no-such-route-404"))
        {
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        }

        using (var forging = await http.GetAsync("/x%0Aforged-line%0D%0A"))
        {
            Assert.Equal(HttpStatusCode.NotFound, forging.StatusCode);
        }

        await daemon.StopAsync();
        var stdout = daemon.Stdout;
        Assert.DoesNotContain(stdout, l => l.Contains("/v2/sandboxes", StringComparison.Ordinal));
        Assert.Single(stdout, l => l.Contains("/no-such-route-404", StringComparison.Ordinal) && l.Contains(" 404 ", StringComparison.Ordinal));
        Assert.DoesNotContain(stdout, l => l.StartsWith("forged-line", StringComparison.Ordinal)); // a decoded %0A does not start a line
        Assert.Contains(stdout, l => l.Contains("%0Aforged-line", StringComparison.Ordinal));
        Assert.True(stdout.Count < 30, $"{stdout.Count} lines on stdout for 201 requests:\n" + string.Join("\n", stdout));
    }

    [Fact(Timeout = 120_000)]
    public async Task With_log_format_json_every_stdout_line_is_a_JSON_object_and_request_log_level_information_logs_each_request()
    {
        await using var daemon = await AirlockDaemon.StartAsync([.. OnlyProcess, "--log-format", "json", "--request-log-level", "information"]);
        using var http = daemon.NewClient();
        for (var i = 0; i < 5; i++)
        {
            using var ok = await http.GetAsync("/v2/sandboxes");
        }

        await daemon.StopAsync();
        var stdout = daemon.Stdout.Where(l => l.Length > 0).ToList();
        Assert.NotEmpty(stdout);
        foreach (var line in stdout)
        {
            using var json = JsonDocument.Parse(line); // throws on a line that is not JSON
            Assert.Equal(JsonValueKind.Object, json.RootElement.ValueKind);
            Assert.True(json.RootElement.TryGetProperty("LogLevel", out _), line);
        }

        Assert.Equal(5, stdout.Count(l => l.Contains("Airlock.Server.Requests", StringComparison.Ordinal) && l.Contains("/v2/sandboxes", StringComparison.Ordinal)));
        Assert.DoesNotContain(daemon.Stdout.Concat(daemon.Stderr), l => l.Contains(daemon.ApiKey, StringComparison.Ordinal)); // not a terminal: the key stays in its file
    }

    [Fact(Timeout = 120_000)]
    public async Task A_non_ASCII_header_on_an_envd_route_is_a_400_not_an_unreachable_agent()
    {
        // Found by the fuzz suite (seed 1212, #2721): YARP's HttpClient cannot send such a value and airlockd answered 502.
        var sandbox = await Host.CreateSandboxAsync();
        using var http = new HttpClient(new SocketsHttpHandler { RequestHeaderEncodingSelector = (_, _) => Encoding.UTF8 }) { BaseAddress = Host.BaseUrl };
        foreach (var (name, value) in new[] { ("Authorization", "Bearer \u00fcn\u00ef"), ("Connect-Protocol-Version", "\u00fcn\u00ef") })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/process.Process/List") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
            request.Headers.Add("E2b-Sandbox-Id", sandbox.SandboxId);
            request.Headers.Add("E2b-Sandbox-Port", EnvdProtocol.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
            request.Headers.Add(EnvdProtocol.AccessTokenHeader, sandbox.EnvdAccessToken);
            request.Headers.TryAddWithoutValidation(name, value);
            using var response = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("invalid_header", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        await KillAsync(sandbox.SandboxId);
    }

    private static HttpRequestMessage Download(SandboxCreated sandbox)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, "/files?path=/home/user/big.bin&username=user");
        request.Headers.Add("E2b-Sandbox-Id", sandbox.SandboxId);
        request.Headers.Add("E2b-Sandbox-Port", EnvdProtocol.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, sandbox.EnvdAccessToken);
        return request;
    }

    private static async Task<long> DrainAsync(Stream body)
    {
        var buffer = new byte[1 << 16];
        long total = 0;
        int read;
        while ((read = await body.ReadAsync(buffer)) > 0)
        {
            total += read;
        }

        return total;
    }

    private async Task<List<AuditRecord>> AuditAsync(string sandboxId, string kind)
    {
        var records = new List<AuditRecord>();
        await foreach (var record in Host.Services.GetRequiredService<IStore>().ReadAuditAsync(0, null, CancellationToken.None))
        {
            if (record.SandboxId == sandboxId && record.Kind == kind)
            {
                records.Add(record);
            }
        }

        return records;
    }

    private async Task KillAsync(string sandboxId)
    {
        using var killed = await Host.Http.DeleteAsync($"/sandboxes/{sandboxId}");
        Assert.Equal(HttpStatusCode.NoContent, killed.StatusCode);
    }

    /// <summary>Watches the host's temp directories (where ASP.NET spools request bodies) for spool files, by event and by polling.</summary>
    private sealed class SpoolWatch : IDisposable
    {
        private readonly List<FileSystemWatcher> _watchers = [];
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _polling;
        private readonly HashSet<string> _before;
        private readonly string[] _dirs;

        public SpoolWatch()
        {
            _dirs = new[] { Path.GetTempPath(), Environment.GetEnvironmentVariable("ASPNETCORE_TEMP") }
                .OfType<string>().Where(Directory.Exists).Distinct().ToArray();
            _before = _dirs.SelectMany(d => Directory.GetFiles(d, "ASPNETCORE_*")).ToHashSet(StringComparer.Ordinal);
            foreach (var dir in _dirs)
            {
                var watcher = new FileSystemWatcher(dir, "ASPNETCORE_*") { EnableRaisingEvents = true };
                watcher.Created += (_, e) => Seen.TryAdd(e.FullPath, 0);
                _watchers.Add(watcher);
            }

            _polling = Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    foreach (var file in _dirs.SelectMany(d => Directory.GetFiles(d, "ASPNETCORE_*")).Where(f => !_before.Contains(f)))
                    {
                        Seen.TryAdd(file, 0);
                    }

                    await Task.Delay(20);
                }
            });
        }

        public ConcurrentDictionary<string, byte> Seen { get; } = new(StringComparer.Ordinal);

        public void Dispose()
        {
            _stop.Cancel();
            _polling.Wait(TimeSpan.FromSeconds(5));
            foreach (var watcher in _watchers)
            {
                watcher.Dispose();
            }

            _stop.Dispose();
        }
    }
}

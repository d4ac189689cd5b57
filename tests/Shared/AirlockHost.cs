using System.Net;
using System.Net.Http.Json;
using Airlock.Core.Api;
using Airlock.Envd;
using Airlock.Envd.Client;
using Airlock.Server;
using Microsoft.AspNetCore.Builder;

namespace Airlock.Testing;

/// <summary>airlockd hosted in the test process on a free loopback port, with its own data directory.</summary>
public sealed class AirlockHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly HashSet<string> _sandboxIds = [];

    private AirlockHost(WebApplication app, AirlockServerOptions options, string apiKey)
    {
        _app = app;
        Options = options;
        ApiKey = apiKey;
        BaseUrl = new Uri(options.Listen);
        Http = NewClient(apiKey);
    }

    public AirlockServerOptions Options { get; }
    public string ApiKey { get; }
    public Uri BaseUrl { get; }
    public HttpClient Http { get; }
    public string DataDir => Options.DataDir;
    public IServiceProvider Services => _app.Services;

    /// <summary>microVM images and template snapshots, shared by every airlockd the tests start (built once, file-locked).</summary>
    public static string VmCacheDir => Environment.GetEnvironmentVariable("AIRLOCK_VM_CACHE_DIR") ?? "/var/lib/airlock/vm-cache";

    public static string TemplatesDir => Environment.GetEnvironmentVariable("AIRLOCK_TEMPLATES_DIR") ?? "/var/lib/airlock/templates";

    public static async Task<AirlockHost> StartAsync(Func<AirlockServerOptions, AirlockServerOptions>? configure = null, string? dataDir = null, CancellationToken cancellationToken = default)
    {
        var options = new AirlockServerOptions
        {
            Listen = $"http://127.0.0.1:{Loopback.FreePort()}",
            DataDir = dataDir ?? Path.Combine(Path.GetTempPath(), "airlock-test-" + Guid.NewGuid().ToString("N")[..12]),
            TemplatesDir = TemplatesDir,
            VmCacheDir = VmCacheDir,
        };
        options = configure?.Invoke(options) ?? options;
        string? key = null;
        var app = await AirlockServer.BuildAsync(options, k => key = k, null, cancellationToken);
        await app.StartAsync(cancellationToken);
        key ??= (await File.ReadAllTextAsync(Path.Combine(options.DataDir, "bootstrap-key"), cancellationToken)).Trim();
        return new AirlockHost(app, options, key);
    }

    public HttpClient NewClient(string? apiKey)
    {
        var client = new HttpClient { BaseAddress = BaseUrl, Timeout = TimeSpan.FromSeconds(120) };
        if (apiKey is not null)
        {
            client.DefaultRequestHeaders.Add("X-API-Key", apiKey);
        }

        return client;
    }

    public async Task<SandboxCreated> CreateSandboxAsync(NewSandboxRequest? request = null, CancellationToken cancellationToken = default)
    {
        request ??= new NewSandboxRequest { TemplateId = "base", Risk = "low", Timeout = 120 };
        using var response = await Http.PostAsJsonAsync("/sandboxes", request, ApiJsonContext.Default.NewSandboxRequest, cancellationToken);
        if (response.StatusCode != HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"create failed: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(cancellationToken)}");
        }

        var created = (await response.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated, cancellationToken))!;
        lock (_sandboxIds)
        {
            _sandboxIds.Add(created.SandboxId);
        }

        return created;
    }

    /// <summary>An envd client that goes through airlockd's routing, as the E2B SDKs do.</summary>
    public EnvdClient Envd(SandboxCreated sandbox, HttpClient? http = null) => new(
        http ?? new HttpClient { Timeout = TimeSpan.FromSeconds(120) },
        new EnvdClientOptions
        {
            BaseAddress = BaseUrl,
            AccessToken = sandbox.EnvdAccessToken,
            Headers = new Dictionary<string, string> { ["E2b-Sandbox-Id"] = sandbox.SandboxId, ["E2b-Sandbox-Port"] = EnvdProtocol.Port.ToString(System.Globalization.CultureInfo.InvariantCulture) },
        });

    /// <summary>Runs a bash command line and collects its output.</summary>
    public async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(SandboxCreated sandbox, string command, CancellationToken cancellationToken = default)
    {
        var stdout = new System.Text.StringBuilder();
        var stderr = new System.Text.StringBuilder();
        var exit = -1;
        await foreach (var output in Envd(sandbox).StartAsync(new ProcessSpec { Command = "/bin/bash", Args = ["-l", "-c", command] }, cancellationToken))
        {
            switch (output)
            {
                case ProcessStdout o: stdout.Append(System.Text.Encoding.UTF8.GetString(o.Data.Span)); break;
                case ProcessStderr e: stderr.Append(System.Text.Encoding.UTF8.GetString(e.Data.Span)); break;
                case ProcessExited x: exit = x.ExitCode; break;
            }
        }

        return (exit, stdout.ToString(), stderr.ToString());
    }

    public IReadOnlyCollection<string> SandboxIds
    {
        get
        {
            lock (_sandboxIds)
            {
                return _sandboxIds.ToArray();
            }
        }
    }

    /// <summary>What this host's sandboxes left on the machine: namespaces, cgroups, processes. Empty when clean.</summary>
    public IReadOnlyList<string> FindLeftovers() => Leftovers.Find(SandboxIds, DataDir);

    private bool _disposed;

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await _app.StopAsync(cts.Token);
        await _app.DisposeAsync();
        Http.Dispose();
        if (DeleteDataDirOnDispose)
        {
            DeleteDataDir();
        }
    }

    /// <summary>Remove the data directory when disposed (hosts a test starts for itself).</summary>
    public bool DeleteDataDirOnDispose { get; set; }

    public void DeleteDataDir()
    {
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Finds traces of sandboxes on the host.</summary>
public static class Leftovers
{
    public static IReadOnlyList<string> Find(IEnumerable<string> sandboxIds, string dataDir)
    {
        var found = new List<string>();
        foreach (var id in sandboxIds)
        {
            if (File.Exists($"/run/netns/airlock-{id}"))
            {
                found.Add($"netns airlock-{id}");
            }

            foreach (var runtime in new[] { "runc", "crun" })
            {
                if (Directory.Exists($"/run/airlock/oci/{runtime}/{id}"))
                {
                    found.Add($"{runtime} container {id}");
                }
            }

            foreach (var root in new[] { "/sys/fs/cgroup/memory/airlock", "/sys/fs/cgroup/pids/airlock", "/sys/fs/cgroup/cpu/airlock", "/sys/fs/cgroup/airlock" })
            {
                if (Directory.Exists(Path.Combine(root, id)))
                {
                    found.Add($"cgroup {root}/{id}");
                }
            }
        }

        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            if (line.Contains(dataDir, StringComparison.Ordinal))
            {
                found.Add("mount " + line);
            }
        }

        foreach (var proc in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(proc), out _))
            {
                continue;
            }

            try
            {
                var cmdline = File.ReadAllText(Path.Combine(proc, "cmdline")).Replace('\0', ' ');
                if ((cmdline.Contains("bwrap", StringComparison.Ordinal) || cmdline.Contains("qemu-system", StringComparison.Ordinal)) && sandboxIds.Any(id => cmdline.Contains(id, StringComparison.Ordinal)))
                {
                    found.Add($"process {Path.GetFileName(proc)}: {cmdline}");
                }
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return found;
    }
}

/// <summary>
/// airlockd as its own process (<c>airlock serve</c> from artifacts/cli), for what only a process shows: its stdout
/// (log format and levels) and its command-line options. Killed, and its data directory removed, when disposed.
/// </summary>
public sealed class AirlockDaemon : IAsyncDisposable
{
    private readonly System.Diagnostics.Process _process;
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _stdout = new();
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _stderr = new();

    private AirlockDaemon(System.Diagnostics.Process process, Uri baseUrl, string dataDir)
    {
        _process = process;
        BaseUrl = baseUrl;
        DataDir = dataDir;
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) { _stdout.Enqueue(e.Data); } };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { _stderr.Enqueue(e.Data); } };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public Uri BaseUrl { get; }

    public string DataDir { get; }

    public string ApiKey { get; private set; } = "";

    /// <summary>Lines airlockd wrote to stdout so far.</summary>
    public IReadOnlyList<string> Stdout => [.. _stdout];

    /// <summary>Lines airlockd wrote to stderr so far.</summary>
    public IReadOnlyList<string> Stderr => [.. _stderr];

    public int ProcessId => _process.Id;

    /// <summary>Starts <c>airlock serve</c> with <paramref name="arguments"/> on a free loopback port and waits (bounded) until it answers.</summary>
    public static async Task<AirlockDaemon> StartAsync(IEnumerable<string> arguments, CancellationToken cancellationToken = default)
    {
        // The checkout's published CLI (Repo is not in every project that shares this file, so the root is found here).
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "Airlock.slnx")))
        {
            root = root.Parent;
        }

        var cli = Path.Combine(root?.FullName ?? ".", "artifacts", "cli", "airlock.dll");
        if (!File.Exists(cli))
        {
            throw new InvalidOperationException("publish the CLI first (scripts/build.sh)");
        }

        var dataDir = Path.Combine(Path.GetTempPath(), "airlock-daemon-" + Guid.NewGuid().ToString("N")[..10]);
        var url = new Uri($"http://127.0.0.1:{Loopback.FreePort()}");
        var start = new System.Diagnostics.ProcessStartInfo("dotnet", ["exec", cli, "serve", "--listen", url.ToString().TrimEnd('/'), "--data-dir", dataDir, .. arguments])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["AIRLOCK_TEMPLATES_DIR"] = AirlockHost.TemplatesDir;
        start.Environment["AIRLOCK_VM_CACHE_DIR"] = AirlockHost.VmCacheDir;
        var daemon = new AirlockDaemon(System.Diagnostics.Process.Start(start)!, url, dataDir);
        try
        {
            using var http = new HttpClient { BaseAddress = url, Timeout = TimeSpan.FromSeconds(5) };
            var until = DateTime.UtcNow.AddSeconds(60);
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (daemon._process.HasExited || DateTime.UtcNow > until)
                {
                    throw new InvalidOperationException("airlockd did not start:\n" + string.Join("\n", daemon.Stderr.Concat(daemon.Stdout)));
                }

                try
                {
                    using var health = await http.GetAsync("/health", cancellationToken);
                    var keyFile = Path.Combine(dataDir, "bootstrap-key");
                    if (health.IsSuccessStatusCode && File.Exists(keyFile))
                    {
                        daemon.ApiKey = (await File.ReadAllTextAsync(keyFile, cancellationToken)).Trim();
                        return daemon;
                    }
                }
                catch (HttpRequestException)
                {
                    // not listening yet
                }

                await Task.Delay(100, cancellationToken);
            }
        }
        catch
        {
            await daemon.DisposeAsync();
            throw;
        }
    }

    public HttpClient NewClient()
    {
        var client = new HttpClient { BaseAddress = BaseUrl, Timeout = TimeSpan.FromSeconds(30) };
        client.DefaultRequestHeaders.Add("X-API-Key", ApiKey);
        return client;
    }

    /// <summary>Asks airlockd to stop (SIGTERM) and waits for it, so its log is flushed; kills it after 30 s.</summary>
    public async Task StopAsync()
    {
        if (_process.HasExited)
        {
            return;
        }

        System.Diagnostics.Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync(CancellationToken.None);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _process.Dispose();
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

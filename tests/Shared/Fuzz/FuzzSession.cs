using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Airlock.Core.Api;
using Airlock.Core.Storage;
using Airlock.Envd.Client;
using Airlock.Server.Auth;
using Microsoft.Extensions.DependencyInjection;

namespace Airlock.Testing.Fuzz;

/// <summary>
/// The scene a fuzz run plays on: a sandbox of mine to aim at, a second tenant with a sandbox and a marker file that
/// must stay untouched, a killed sandbox id, and host sentinel files that traversal paths name. After the run,
/// <see cref="VerifyAsync"/> lists every rule broken: host files or data directory changed, the other tenant's sandbox
/// touched, a sandbox created, airlockd no longer serving. Run it on an airlockd whose tenant quota is one sandbox
/// (<see cref="Configure(Airlock.Server.AirlockServerOptions)"/>): a fuzzed create that happens to be valid is then refused instead of booting a sandbox.
/// </summary>
public sealed class FuzzSession : IAsyncDisposable
{
    private const string Marker = "/home/user/tenant-marker.bin";
    private readonly AirlockHost _host;
    private readonly HttpClient _other;
    private readonly string _sentinelDir;
    private readonly byte[] _marker;
    private readonly SandboxCreated _otherSandbox;
    private readonly SandboxCreated _mine;
    private readonly string _otherListing;
    private readonly TreeSnapshot _hostBefore;
    private readonly TreeSnapshot _dataBefore;

    private FuzzSession(AirlockHost host, HttpClient other, string sentinelDir, byte[] marker, SandboxCreated mine, SandboxCreated otherSandbox, string otherListing, FuzzTargets targets)
    {
        _mine = mine;
        _host = host;
        _other = other;
        _sentinelDir = sentinelDir;
        _marker = marker;
        _otherSandbox = otherSandbox;
        _otherListing = otherListing;
        Targets = targets;
        _hostBefore = TreeSnapshot.Take(HostRoots());
        _dataBefore = TreeSnapshot.Take([host.DataDir], SkipInDataDir);
    }

    public FuzzTargets Targets { get; }

    /// <summary>The server options a fuzz run needs: one sandbox per tenant (the fuzzed one).</summary>
    public static Airlock.Server.AirlockServerOptions Configure(Airlock.Server.AirlockServerOptions options) => options with { MaxSandboxesPerTenant = 1 };

    public static async Task<FuzzSession> StartAsync(AirlockHost host, NewSandboxRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(host);
        var sentinelDir = Path.Combine("/tmp", "airlock-fuzz-sentinel-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4)));
        Directory.CreateDirectory(Path.Combine(sentinelDir, "sub"));
        await File.WriteAllTextAsync(Path.Combine(sentinelDir, "a.txt"), "host sentinel a\n", cancellationToken);
        await File.WriteAllTextAsync(Path.Combine(sentinelDir, "sub", "b.txt"), "host sentinel b\n", cancellationToken);
        await File.WriteAllTextAsync("/etc/airlock-fuzz-sentinel", "host sentinel etc\n", cancellationToken);

        // A second tenant, straight into the store as the tenant tests do (no tenants API yet: issue 12 adds it).
        var store = host.Services.GetRequiredService<IStore>();
        var tenant = await store.CreateTenantAsync("fuzz-other-" + Guid.NewGuid().ToString("N")[..6], cancellationToken);
        var otherKey = ApiKeys.NewApiKey();
        await store.AddApiKeyAsync(new ApiKeyRecord(ApiKeys.NewId(), tenant.TenantId, ApiKeys.Hash(otherKey), "fuzz", DateTimeOffset.UtcNow), cancellationToken);
        var other = host.NewClient(otherKey);

        var killed = await host.CreateSandboxAsync(request, cancellationToken);
        (await host.Http.DeleteAsync($"/sandboxes/{killed.SandboxId}", cancellationToken)).EnsureSuccessStatusCode();
        var mine = await host.CreateSandboxAsync(request, cancellationToken);
        await host.RunAsync(mine, "mkdir -p /home/user/fuzz", cancellationToken);
        using var created = await other.PostAsJsonAsync("/sandboxes", request, ApiJsonContext.Default.NewSandboxRequest, cancellationToken);
        created.EnsureSuccessStatusCode();
        var otherSandbox = (await created.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated, cancellationToken))!;
        var marker = RandomNumberGenerator.GetBytes(64 * 1024);
        using (var content = new MemoryStream(marker))
        {
            await host.Envd(otherSandbox).WriteFileAsync(Marker, content, cancellationToken);
        }

        var listing = await ListingAsync(host, otherSandbox, cancellationToken);

        var targets = new FuzzTargets(
            host.ApiKey,
            otherKey,
            new FuzzSandbox(mine.SandboxId, mine.EnvdAccessToken),
            new FuzzSandbox(otherSandbox.SandboxId, otherSandbox.EnvdAccessToken),
            killed.SandboxId,
            [
                "/etc/airlock-fuzz-sentinel", "/etc/airlock-fuzz-written", sentinelDir, Path.Combine(sentinelDir, "a.txt"), Path.Combine(sentinelDir, "sub", "b.txt"),
                Path.Combine(host.DataDir, "bootstrap-key"), Path.Combine(host.DataDir, "sandboxes", otherSandbox.SandboxId), "/etc/shadow",
            ]);
        return new FuzzSession(host, other, sentinelDir, marker, mine, otherSandbox, listing, targets);
    }

    private static async Task<string> ListingAsync(AirlockHost host, SandboxCreated sandbox, CancellationToken cancellationToken)
    {
        var (exit, stdout, stderr) = await host.RunAsync(sandbox, "cd /home/user && find . -xdev -printf '%p %s %m\\n' | sort && sha256sum " + Marker, cancellationToken);
        return $"exit {exit}\n{stdout}{stderr}";
    }

    private IEnumerable<string> HostRoots() => ["/etc/airlock-fuzz-sentinel", "/etc/airlock-fuzz-written", _sentinelDir, "/home/user", "/tmp/fuzz-0", "/relative"];

    /// <summary>
    /// The data directory but what changes by design (the database, logs, the fuzzed sandbox's own disk) and the
    /// mounted views of a layer (merged rootfs, lower, overlay work dir: their changes show in the layer's upper dir).
    /// </summary>
    private bool SkipInDataDir(string path)
    {
        var name = Path.GetFileName(path);
        var parent = Path.GetFileName(Path.GetDirectoryName(path)) ?? "";
        return name.StartsWith(Airlock.Storage.SqliteStore.FileName, StringComparison.Ordinal)
            || name.EndsWith(".log", StringComparison.Ordinal)
            || path == Path.Combine(_host.DataDir, "sandboxes", Targets.Mine.Id)
            || name is "merged" or "lower" or "rootfs"
            || (name == "work" && parent == "layer");
    }

    /// <summary>Every rule the run broke; empty when airlockd, the host and the other tenant came through untouched.</summary>
    public async Task<IReadOnlyList<string>> VerifyAsync(CancellationToken cancellationToken)
    {
        var broken = new List<string>();
        broken.AddRange(_hostBefore.Diff(TreeSnapshot.Take(HostRoots())).Select(d => "host file changed: " + d));
        broken.AddRange(_dataBefore.Diff(TreeSnapshot.Take([_host.DataDir], SkipInDataDir)).Select(d => "data dir changed: " + d));

        using (var health = await _host.Http.GetAsync("/health", cancellationToken))
        {
            if (health.StatusCode != HttpStatusCode.OK)
            {
                broken.Add($"/health answered {(int)health.StatusCode}");
            }
        }

        // The other tenant's sandbox: still running, its files as they were.
        var detail = await _other.GetFromJsonAsync($"/sandboxes/{_otherSandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail, cancellationToken);
        if (detail?.State != "running")
        {
            broken.Add($"the other tenant's sandbox is {detail?.State}");
        }
        else
        {
            await using var read = await _host.Envd(_otherSandbox).ReadFileAsync(Marker, cancellationToken);
            using var copy = new MemoryStream();
            await read.CopyToAsync(copy, cancellationToken);
            if (!copy.ToArray().AsSpan().SequenceEqual(_marker))
            {
                broken.Add("the other tenant's marker file changed");
            }

            var listing = await ListingAsync(_host, _otherSandbox, cancellationToken);
            if (listing != _otherListing)
            {
                broken.Add($"the other tenant's home changed:\n--- before\n{_otherListing}\n--- after\n{listing}");
            }
        }

        // No sandbox was created by the fuzz (every create it sends is invalid).
        var mine = await _host.Http.GetFromJsonAsync("/v2/sandboxes?state=running,paused", ApiJsonContext.Default.ListSandboxDetail, cancellationToken);
        foreach (var sandbox in mine!.Where(s => s.SandboxId != Targets.Mine.Id))
        {
            broken.Add($"an unexpected sandbox {sandbox.SandboxId} ({sandbox.State}) exists");
        }

        // The fuzzed sandbox itself still runs commands (the generator never wipes it: a dead agent is a finding).
        try
        {
            var (exit, stdout, _) = await _host.RunAsync(_mine, "echo alive", cancellationToken);
            if ((exit, stdout) != (0, "alive\n"))
            {
                broken.Add($"the fuzzed sandbox ran `echo alive` as {exit} {stdout}");
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or EnvdException or IOException)
        {
            broken.Add("the fuzzed sandbox no longer runs commands: " + ex.Message);
        }

        // And airlockd still does its job: a new sandbox runs a command (the fuzzed one goes first: with a tenant
        // quota of one sandbox, no create the fuzz sends can start anything).
        await _host.Http.DeleteAsync($"/sandboxes/{Targets.Mine.Id}", cancellationToken);
        try
        {
            var probe = await _host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = "low", Timeout = 120 }, cancellationToken);
            var (exit, stdout, _) = await _host.RunAsync(probe, "echo alive", cancellationToken);
            if ((exit, stdout) != (0, "alive\n"))
            {
                broken.Add($"a new sandbox after the fuzz ran `echo alive` as {exit} {stdout}");
            }

            await _host.Http.DeleteAsync($"/sandboxes/{probe.SandboxId}", cancellationToken);
        }
        catch (Exception ex) when (ex is HttpRequestException or InvalidOperationException or EnvdException)
        {
            broken.Add("a new sandbox after the fuzz failed: " + ex.Message);
        }

        return broken;
    }

    public async ValueTask DisposeAsync()
    {
        await _host.Http.DeleteAsync($"/sandboxes/{Targets.Mine.Id}");
        await _other.DeleteAsync($"/sandboxes/{_otherSandbox.SandboxId}");
        _other.Dispose();
        File.Delete("/etc/airlock-fuzz-sentinel");
        Directory.Delete(_sentinelDir, recursive: true);
    }
}

using System.Diagnostics;
using System.Net.Http.Json;
using System.Text;
using Airlock.Audit;
using Airlock.Core.Api;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Airlock.IntegrationTests;

/// <summary>
/// Crash consistency: airlockd SIGKILLs itself at a named step of create, pause, resume or kill (AIRLOCK_FAILPOINT,
/// src/Airlock.Sandboxes/Failpoints.cs). Before anything restarts, nothing of its sandboxes may still run on the host;
/// the next airlockd leaves no process, netns, veth, mount, cgroup, state directory or lease of a sandbox that did not
/// survive, marks each one with a reason (or keeps it paused when its files are complete), and its audit chain verifies.
/// </summary>
/// <remarks>
/// CI runs every step on the process boundary and create+pause on the container boundary (≈ 2 min); the microVM's
/// create+pause carry the Slow trait; AIRLOCK_CRASH_MATRIX=full adds resume and kill on container and microVM
/// (bench/crash-consistency.sh).
/// </remarks>
[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class CrashConsistencyTests
{
    private static readonly string[] CreateSteps = ["create.after-insert", "create.after-network", "spawn.after-start", "create.after-driver-start", "create.before-running"];
    private static readonly string[] PauseSteps = ["pause.after-pausing", "pause.after-driver", "pause.before-paused"];
    private static readonly string[] ResumeKillSteps = ["resume.after-network", "resume.before-running", "kill.after-stop", "kill.before-record"];
    private static readonly bool FullMatrix = Environment.GetEnvironmentVariable("AIRLOCK_CRASH_MATRIX") == "full";

    public static TheoryData<string, string> Steps()
    {
        var data = new TheoryData<string, string>();
        foreach (var step in CreateSteps.Concat(PauseSteps).Concat(ResumeKillSteps))
        {
            data.Add("low", step);
        }

        foreach (var step in CreateSteps.Concat(PauseSteps).Concat(FullMatrix ? ResumeKillSteps : []))
        {
            data.Add("medium", step);
        }

        return data;
    }

    public static TheoryData<string> MicroVmSteps()
    {
        var data = new TheoryData<string>();
        foreach (var step in CreateSteps.Concat(PauseSteps).Concat(FullMatrix ? ResumeKillSteps : []))
        {
            data.Add(step);
        }

        return data;
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Steps))]
    public Task Airlockd_killed_at_a_step_leaves_nothing_running_and_the_next_start_cleans_and_marks_every_sandbox(string risk, string step) =>
        CrashAndRecoverAsync(risk, step, keep: false);

    [Theory(Timeout = 300_000)]
    [Trait("Category", "Slow")]
    [MemberData(nameof(MicroVmSteps))]
    public Task A_microVM_caught_at_a_step_leaves_nothing_running_and_the_next_start_cleans_and_marks_it(string step)
        => CrashAndRecoverAsync("high", step, keep: false);

    [Theory(Timeout = 120_000)]
    [InlineData("low", "pause.after-pausing", "running")]
    [InlineData("low", "kill.after-stop", "failed")]
    [InlineData("low", "create.before-running", "failed")]
    [InlineData("medium", "pause.after-pausing", "running")]
    public Task With_keep_sandboxes_a_sandbox_that_survived_the_crash_is_re_adopted_and_the_others_are_cleaned(string risk, string step, string expected) =>
        CrashAndRecoverAsync(risk, step, keep: true, expected);

    private static async Task CrashAndRecoverAsync(string risk, string step, bool keep, string? expected = null)
    {
        var dataDir = Path.Combine(Path.GetTempPath(), "airlock-crash-" + Guid.NewGuid().ToString("N")[..10]);
        string? created;
        await using (var daemon = await Daemon.StartAsync(dataDir, step, keep))
        {
            created = await DriveToFailpointAsync(daemon, risk, step);
            Assert.True(await daemon.WaitForDeathAsync(TimeSpan.FromSeconds(90)), $"airlockd did not reach failpoint {step}: {daemon.Output}");
            Assert.Contains($"failpoint {step}: SIGKILL", daemon.Output, StringComparison.Ordinal);
        }

        // airlockd is dead and nothing has restarted it: no process of a sandbox it did not keep may still run.
        var ids = KnownIds(dataDir, created);
        if (!keep)
        {
            Assert.Empty(await AliveAsync(dataDir, ids, TimeSpan.FromSeconds(5)));
        }

        var next = await AirlockHost.StartAsync(o => o with { KeepSandboxesOnShutdown = false }, dataDir);
        try
        {
            var store = next.Services.GetRequiredService<IStore>();
            var records = await store.ListSandboxesAsync(null, null, CancellationToken.None);

            Assert.NotEmpty(records);
            var network = next.Services.GetRequiredService<INetworkManager>();
            var networkLeftovers = await network.FindLeftoversAsync(CancellationToken.None);
            foreach (var record in records)
            {
                var id = record.SandboxId;
                var state = record.State;
                Assert.True(state is SandboxState.Failed or SandboxState.Paused or SandboxState.Running, $"{step}: {id} is {state}");
                if (expected is not null)
                {
                    Assert.Equal(expected, state.ToString().ToLowerInvariant());
                }

                if (state == SandboxState.Failed)
                {
                    Assert.False(string.IsNullOrWhiteSpace(record.FailureReason), $"{id} failed without a reason");
                }

                if (state != SandboxState.Running)
                {
                    Assert.DoesNotContain(id, networkLeftovers);
                    Assert.False(File.Exists(Path.Combine(dataDir, "network", "leases", id)), $"lease of {id} left");
                    Assert.DoesNotContain(Leftovers.Find([id], dataDir), l => !l.StartsWith("mount ", StringComparison.Ordinal) || l.Contains(id, StringComparison.Ordinal));
                    Assert.Empty(await AliveAsync(dataDir, [id], TimeSpan.Zero));
                }

                if (state == SandboxState.Failed)
                {
                    Assert.False(Directory.Exists(Path.Combine(dataDir, "sandboxes", id)), $"state directory of failed {id} left");
                }
            }

            var audit = await AuditVerifier.VerifyAsync(store.ReadAuditAsync(0, null, CancellationToken.None), CancellationToken.None);
            Assert.True(audit.Ok, audit.Reason);

            // What was kept works: a paused sandbox resumes, a re-adopted one runs commands.
            foreach (var record in records.Where(r => r.State is SandboxState.Paused or SandboxState.Running))
            {
                var sandbox = record.State == SandboxState.Paused
                    ? await ResumeAsync(next, record.SandboxId)
                    : new SandboxCreated { SandboxId = record.SandboxId, EnvdAccessToken = record.AccessToken!, TemplateId = record.TemplateId, EnvdVersion = "", Boundary = record.Report! };
                var (exit, output, _) = await next.RunAsync(sandbox, "echo alive");
                Assert.Equal((0, "alive\n"), (exit, output));
                using var killed = await next.Http.DeleteAsync($"/sandboxes/{record.SandboxId}");
            }
        }
        finally
        {
            await next.DisposeAsync();
        }

        Assert.Empty(Leftovers.Find(KnownIds(dataDir, created).Concat(ids), dataDir));
        Assert.Empty(await AliveAsync(dataDir, ids, TimeSpan.FromSeconds(5)));
        next.DeleteDataDir();
    }

    private static async Task<SandboxCreated> ResumeAsync(AirlockHost host, string id)
    {
        using var response = await host.Http.PostAsync($"/sandboxes/{id}/resume", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.True(response.IsSuccessStatusCode, $"resume {id}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        return (await response.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated))!;
    }

    /// <summary>Creates, and for later steps pauses, resumes or kills, until airlockd hits the failpoint; returns the sandbox id when known.</summary>
    private static async Task<string?> DriveToFailpointAsync(Daemon daemon, string risk, string step)
    {
        var request = new NewSandboxRequest { TemplateId = "base", Risk = risk, Timeout = 120 };
        if (step.StartsWith("create.", StringComparison.Ordinal) || step.StartsWith("spawn.", StringComparison.Ordinal))
        {
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => daemon.Http.PostAsJsonAsync("/sandboxes", request, ApiJsonContext.Default.NewSandboxRequest));
            return null;
        }

        using var created = await daemon.Http.PostAsJsonAsync("/sandboxes", request, ApiJsonContext.Default.NewSandboxRequest);
        Assert.True(created.IsSuccessStatusCode, await created.Content.ReadAsStringAsync());
        var id = (await created.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated))!.SandboxId;
        // To disk, where the failpoints are; a microVM keeps its memory (its pause to disk is a snapshot).
        var pause = $"/sandboxes/{id}/pause" + (risk == "high" ? "" : "?mode=disk");
        var empty = new StringContent("{}", Encoding.UTF8, "application/json");
        if (step.StartsWith("pause.", StringComparison.Ordinal))
        {
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => daemon.Http.PostAsync(pause, empty));
        }
        else if (step.StartsWith("resume.", StringComparison.Ordinal))
        {
            using var paused = await daemon.Http.PostAsync(pause, empty);
            Assert.True(paused.IsSuccessStatusCode, await paused.Content.ReadAsStringAsync());
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => daemon.Http.PostAsync($"/sandboxes/{id}/resume", new StringContent("{}", Encoding.UTF8, "application/json")));
        }
        else
        {
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => daemon.Http.DeleteAsync($"/sandboxes/{id}"));
        }

        return id;
    }

    private static string[] KnownIds(string dataDir, string? created)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        if (created is not null)
        {
            ids.Add(created);
        }

        foreach (var dir in new[] { Path.Combine(dataDir, "sandboxes"), Path.Combine(dataDir, "network", "leases") })
        {
            if (Directory.Exists(dir))
            {
                ids.UnionWith(Directory.EnumerateFileSystemEntries(dir).Select(Path.GetFileName).OfType<string>());
            }
        }

        return [.. ids];
    }

    /// <summary>
    /// Live (not zombie) processes of these sandboxes: in one of their cgroups, or started with the data directory on
    /// their command line (the launch chain, bwrap, runc, qemu). Polls up to <paramref name="settle"/> for SIGKILLs to land.
    /// </summary>
    private static async Task<IReadOnlyList<string>> AliveAsync(string dataDir, IReadOnlyCollection<string> ids, TimeSpan settle)
    {
        var deadline = DateTime.UtcNow + settle;
        while (true)
        {
            var alive = new List<string>();
            foreach (var proc in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(proc), out var pid) || pid == Environment.ProcessId)
                {
                    continue;
                }

                try
                {
                    var cmdline = File.ReadAllText(Path.Combine(proc, "cmdline")).Replace('\0', ' ');
                    var cgroups = File.ReadAllText(Path.Combine(proc, "cgroup"));
                    if (cmdline.Length > 0
                        && (cmdline.Contains(dataDir, StringComparison.Ordinal) || ids.Any(id => cgroups.Contains($"/airlock/{id}", StringComparison.Ordinal))))
                    {
                        alive.Add($"pid {pid}: {cmdline[..Math.Min(cmdline.Length, 200)]}");
                    }
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                }
            }

            if (alive.Count == 0 || DateTime.UtcNow >= deadline)
            {
                return alive;
            }

            await Task.Delay(100);
        }
    }

    /// <summary>airlockd as a separate process (the published CLI), armed with one failpoint.</summary>
    private sealed class Daemon : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _output = new();

        private Daemon(Process process, HttpClient http)
        {
            _process = process;
            Http = http;
        }

        public HttpClient Http { get; }

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        public static async Task<Daemon> StartAsync(string dataDir, string failpoint, bool keep)
        {
            var cli = Path.Combine(Repo.Root, "artifacts", "cli", "airlock.dll");
            Assert.True(File.Exists(cli), "publish the CLI first (scripts/build.sh)");
            var port = Loopback.FreePort();
            List<string> args = ["exec", cli, "serve", "--listen", $"http://127.0.0.1:{port}", "--data-dir", dataDir];
            if (keep)
            {
                args.Add("--keep-sandboxes");
            }

            var start = new ProcessStartInfo("dotnet", args) { RedirectStandardOutput = true, RedirectStandardError = true };
            start.Environment["AIRLOCK_TEMPLATES_DIR"] = AirlockHost.TemplatesDir;
            start.Environment["AIRLOCK_VM_CACHE_DIR"] = AirlockHost.VmCacheDir;
            start.Environment["AIRLOCK_FAILPOINT"] = failpoint;
            var process = Process.Start(start)!;
            var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(120) };
            var daemon = new Daemon(process, http);
            process.OutputDataReceived += (_, e) => daemon.Append(e.Data);
            process.ErrorDataReceived += (_, e) => daemon.Append(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var key = Path.Combine(dataDir, "bootstrap-key");
            for (var i = 0; i < 600; i++)
            {
                try
                {
                    if (File.Exists(key))
                    {
                        using var health = await http.GetAsync("/health");
                        if (health.IsSuccessStatusCode)
                        {
                            http.DefaultRequestHeaders.Add("X-API-Key", (await File.ReadAllTextAsync(key)).Trim());
                            return daemon;
                        }
                    }
                }
                catch (HttpRequestException)
                {
                }

                Assert.False(process.HasExited, $"airlockd exited at start: {daemon.Output}");
                await Task.Delay(100);
            }

            await daemon.DisposeAsync();
            throw new TimeoutException($"airlockd did not answer: {daemon.Output}");
        }

        /// <summary>Whether airlockd died by SIGKILL (exit status 137) within the time.</summary>
        public async Task<bool> WaitForDeathAsync(TimeSpan within)
        {
            using var timeout = new CancellationTokenSource(within);
            try
            {
                await _process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                return false;
            }

            return _process.ExitCode == 137;
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: false);
                await _process.WaitForExitAsync();
            }

            Http.Dispose();
            _process.Dispose();
        }

        private void Append(string? line)
        {
            if (line is not null)
            {
                lock (_output)
                {
                    _output.AppendLine(line);
                }
            }
        }
    }
}

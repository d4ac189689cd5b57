using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using Airlock.Core.Api;
using Airlock.Envd.Client;
using Airlock.Testing;

namespace Airlock.IntegrationTests;

/// <summary>
/// The microvm boundary with real QEMU (TCG on this host): snapshot start, identity, pause to disk and resume, faults.
/// Every VM but the template's comes from the pre-booted snapshot unless a test asks for a cold boot.
/// </summary>
[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class MicroVmTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private AirlockHost Host => fixture.Host;

    private static NewSandboxRequest MicroVm(int timeout = 300, Dictionary<string, string>? env = null, bool? cold = null) =>
        new() { TemplateId = "base", Timeout = timeout, EnvVars = env, Cold = cold };

    [Fact(Timeout = 300_000)]
    public async Task The_default_sandbox_is_a_microvm_with_its_own_kernel_and_a_fresh_identity()
    {
        var a = await Host.CreateSandboxAsync(MicroVm(env: new() { ["GREETING"] = "hi-from-env" }));
        var b = await Host.CreateSandboxAsync(MicroVm());
        try
        {
            var report = a.Boundary;
            Assert.Equal("microvm", report.Boundary);
            Assert.Equal("qemu", report.Driver);
            Assert.Contains(report.Accelerator, new[] { "kvm", "tcg" });
            Assert.NotNull(report.AcceleratorReason);
            Assert.Contains(report.Machine, new[] { "microvm", "q35" });
            Assert.Equal("snapshot", report.StartedFrom);
            Assert.Empty(LingeringProbes()); // a KVM probe that hung was killed, not left behind
            Assert.Equal(512, a.Boundary.Limits.MemoryMiB);

            var hostKernel = (await File.ReadAllTextAsync("/proc/sys/kernel/osrelease")).Trim();
            var (exit, stdout, _) = await Host.RunAsync(a, "uname -r; id -un; hostname; cat /etc/machine-id; echo $GREETING; date +%s");
            Assert.Equal(0, exit);
            var lines = stdout.Split('\n');
            Assert.Equal(report.Kernel, lines[0]);
            Assert.NotEqual(hostKernel, lines[0]);
            Assert.Equal("user", lines[1]);
            Assert.Equal("sandbox", lines[2]);
            Assert.Equal("hi-from-env", lines[4]);
            // The snapshot's clock was stale; SetIdentity set it.
            Assert.InRange(long.Parse(lines[5], System.Globalization.CultureInfo.InvariantCulture), DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 60, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 60);

            // Two clones of one snapshot diverge: machine-id and the kernel's random numbers differ.
            var other = await Host.RunAsync(b, "cat /etc/machine-id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'");
            var mine = await Host.RunAsync(a, "cat /etc/machine-id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'");
            Assert.NotEqual(mine.Stdout.Split('\n')[0], other.Stdout.Split('\n')[0]);
            Assert.NotEqual(mine.Stdout.Split('\n')[1], other.Stdout.Split('\n')[1]);

            // The agent-administration service is never reachable through airlockd, even with the sandbox's token.
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(Host.BaseUrl, "/airlock.agent.v1.Agent/SetIdentity"));
            request.Headers.Add("E2b-Sandbox-Id", a.SandboxId);
            request.Headers.Add("E2b-Sandbox-Port", "49983");
            request.Headers.Add("X-Access-Token", a.EnvdAccessToken);
            request.Content = new StringContent("{\"accessToken\":\"0123456789abcdef0123\"}", Encoding.UTF8, "application/json");
            using var response = await Host.Http.SendAsync(request);
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.Equal(0, (await Host.RunAsync(a, "true")).ExitCode);
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{a.SandboxId}");
            await Host.Http.DeleteAsync($"/sandboxes/{b.SandboxId}");
        }

        Assert.Empty(Leftovers.Find([a.SandboxId, b.SandboxId], Host.DataDir));
    }

    [Fact(Timeout = 300_000)]
    public async Task A_cold_boot_is_still_available_and_reports_itself()
    {
        var sandbox = await Host.CreateSandboxAsync(MicroVm(cold: true));
        try
        {
            Assert.Equal("cold boot", sandbox.Boundary.StartedFrom);
            var (exit, stdout, _) = await Host.RunAsync(sandbox, "uname -r");
            Assert.Equal(0, exit);
            Assert.Equal(sandbox.Boundary.Kernel, stdout.Trim());
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }
    }

    /// <summary>E2B users lost files across pause/resume (e2b-dev/E2B#884): every file and a process must survive 20 cycles.</summary>
    [Fact(Timeout = 900_000)]
    public async Task Twenty_pause_resume_cycles_keep_every_file_and_the_background_process()
    {
        var sandbox = await Host.CreateSandboxAsync(MicroVm(timeout: 1200));
        try
        {
            var start = await Host.RunAsync(sandbox, "nohup bash -c 'n=0; while true; do n=$((n+1)); echo $n > /tmp/hb.tmp; mv /tmp/hb.tmp /tmp/heartbeat; sleep 0.2; done' >/dev/null 2>&1 & echo $!");
            var pid = start.Stdout.Trim();
            var expected = new Dictionary<string, string>();
            for (var cycle = 0; cycle < 20; cycle++)
            {
                var content = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4096));
                var path = $"/home/user/cycle-{cycle}.txt";
                var write = await Host.RunAsync(sandbox, $"printf '%s' '{content}' > {path} && sha256sum {path} | cut -d' ' -f1");
                Assert.Equal(0, write.ExitCode);
                expected[path] = write.Stdout.Trim();
                Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.ASCII.GetBytes(content))), expected[path]);

                using (var pause = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
                {
                    Assert.Equal(HttpStatusCode.NoContent, pause.StatusCode);
                }

                var paused = await Host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
                Assert.Equal("paused", paused!.State);
                Assert.False(QemuRunning(sandbox.SandboxId), "a paused sandbox holds no QEMU process");

                using (var resume = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/connect", JsonContent.Create(new ResumeRequest { Timeout = 1200 }, ApiJsonContext.Default.ResumeRequest)))
                {
                    Assert.Equal(HttpStatusCode.Created, resume.StatusCode);
                }

                var check = await Host.RunAsync(sandbox, $"sha256sum /home/user/cycle-*.txt | sort -k2; kill -0 {pid} && echo alive; a=$(cat /tmp/heartbeat); sleep 0.6; b=$(cat /tmp/heartbeat); [ $b -gt $a ] && echo beating");
                Assert.True(check.ExitCode == 0, $"cycle {cycle}: exit {check.ExitCode}\n{check.Stdout}\n{check.Stderr}");
                foreach (var (file, hash) in expected)
                {
                    Assert.Contains($"{hash}  {file}", check.Stdout);
                }

                Assert.Contains("alive", check.Stdout);
                Assert.Contains("beating", check.Stdout);
            }

            using var running = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/connect", JsonContent.Create(new ResumeRequest { Timeout = 600 }, ApiJsonContext.Default.ResumeRequest));
            Assert.Equal(HttpStatusCode.OK, running.StatusCode);
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }

        Assert.Empty(Leftovers.Find([sandbox.SandboxId], Host.DataDir));
    }

    [Fact(Timeout = 300_000)]
    public async Task Pause_and_resume_errors_are_clear_and_lose_nothing()
    {
        var sandbox = await Host.CreateSandboxAsync(MicroVm());
        using (var first = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
        {
            Assert.Equal(HttpStatusCode.NoContent, first.StatusCode);
        }

        using (var again = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
        {
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        }

        using (var resumed = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/resume", null))
        {
            Assert.Equal(HttpStatusCode.Created, resumed.StatusCode);
        }

        using (var twice = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/resume", null))
        {
            Assert.Equal(HttpStatusCode.Conflict, twice.StatusCode);
        }

        // A paused sandbox can be killed; its files go with it, and it cannot come back.
        using (var pause = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
        {
            Assert.Equal(HttpStatusCode.NoContent, pause.StatusCode);
        }

        using (var kill = await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}"))
        {
            Assert.Equal(HttpStatusCode.NoContent, kill.StatusCode);
        }

        Assert.False(Directory.Exists(Path.Combine(Host.DataDir, "sandboxes", sandbox.SandboxId)));
        using (var gone = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/resume", null))
        {
            Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        }

        using (var connect = await Host.Http.PostAsync("/sandboxes/aaaaaaaaaaaaaaaaaaaa/connect", null))
        {
            Assert.Equal(HttpStatusCode.NotFound, connect.StatusCode);
        }

        // The process boundary pauses its files only; asking to keep memory there is not a failure, and the audit says
        // what was kept. Its metrics are refused while paused, and it runs commands again once connected.
        var process = await Host.CreateSandboxAsync();
        await Host.RunAsync(process, "echo kept > /home/user/kept.txt");
        using (var paused = await Host.Http.PostAsync($"/sandboxes/{process.SandboxId}/pause", JsonContent.Create(new PauseRequest { Memory = true }, ApiJsonContext.Default.PauseRequest)))
        {
            Assert.Equal(HttpStatusCode.NoContent, paused.StatusCode);
        }

        using (var metrics = await Host.Http.GetAsync($"/sandboxes/{process.SandboxId}/metrics"))
        {
            Assert.Equal(HttpStatusCode.Conflict, metrics.StatusCode);
        }

        using (var back = await Host.Http.PostAsync($"/sandboxes/{process.SandboxId}/connect", null))
        {
            Assert.Equal(HttpStatusCode.Created, back.StatusCode);
        }

        Assert.Equal((0, "kept\n", ""), await Host.RunAsync(process, "cat /home/user/kept.txt"));
        var audit = await Host.Http.GetStringAsync("/audit");
        Assert.Contains("memory asked for; this boundary keeps files only", audit, StringComparison.Ordinal);
        await Host.Http.DeleteAsync($"/sandboxes/{process.SandboxId}");
    }

    [Fact(Timeout = 120_000)]
    public async Task Memory_and_vcpus_beyond_the_quota_are_refused()
    {
        foreach (var (request, status) in new (NewSandboxRequest, HttpStatusCode)[]
        {
            (new NewSandboxRequest { TemplateId = "base", MemoryMB = 1_000_000 }, HttpStatusCode.BadRequest),
            (new NewSandboxRequest { TemplateId = "base", MemoryMB = 16 }, HttpStatusCode.BadRequest),
            (new NewSandboxRequest { TemplateId = "base", CpuCount = 64 }, HttpStatusCode.BadRequest),
            (new NewSandboxRequest { TemplateId = "base", CpuCount = 0 }, HttpStatusCode.BadRequest),
        })
        {
            using var response = await Host.Http.PostAsJsonAsync("/sandboxes", request, ApiJsonContext.Default.NewSandboxRequest);
            Assert.Equal(status, response.StatusCode);
        }
    }

    [Fact(Timeout = 300_000)]
    public async Task A_QEMU_crash_fails_the_sandbox_with_the_reason_and_frees_everything()
    {
        var sandbox = await Host.CreateSandboxAsync(MicroVm());
        var pid = QemuPid(sandbox.SandboxId);
        Assert.NotNull(pid);
        Process.GetProcessById(pid.Value).Kill();
        SandboxDetail? detail = null;
        for (var i = 0; i < 100; i++)
        {
            detail = await Host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
            if (detail!.State == "failed")
            {
                break;
            }

            await Task.Delay(200);
        }

        Assert.Equal("failed", detail!.State);
        Assert.Contains("signal 9", detail.FailureReason);
        Assert.Empty(Leftovers.Find([sandbox.SandboxId], Host.DataDir));
        Assert.False(Directory.Exists(Path.Combine(Host.DataDir, "sandboxes", sandbox.SandboxId)));
    }

    [Fact(Timeout = 300_000)]
    public async Task A_full_disk_while_writing_the_snapshot_fails_the_pause_and_the_sandbox_keeps_running()
    {
        var sandbox = await Host.CreateSandboxAsync(MicroVm());
        var stateDir = Path.Combine(Host.DataDir, "sandboxes", sandbox.SandboxId);
        await Host.RunAsync(sandbox, "echo before > /home/user/before.txt");
        // A 4 MiB tmpfs over the state directory: QEMU keeps its open disk, the memory image finds no room.
        await Cli("mount", "-t", "tmpfs", "-o", "size=4m,mode=0777", "airlock-test-full", stateDir);
        try
        {
            using var pause = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null);
            Assert.Equal((HttpStatusCode)507, pause.StatusCode);
            Assert.Contains("keeps running", await pause.Content.ReadAsStringAsync());
        }
        finally
        {
            await Cli("umount", stateDir);
        }

        var detail = await Host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
        Assert.Equal("running", detail!.State);
        var (exit, stdout, _) = await Host.RunAsync(sandbox, "cat /home/user/before.txt");
        Assert.Equal(0, exit);
        Assert.Equal("before\n", stdout);
        var audit = await AuditTests.ReadAuditAsync(Host);
        Assert.Contains(audit, r => r.SandboxId == sandbox.SandboxId && r.Kind == "sandbox.pause.failed");
        await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
    }

    [Fact(Timeout = 300_000)]
    public async Task Usage_is_metered_for_running_and_paused_sandboxes()
    {
        var sandbox = await Host.CreateSandboxAsync(MicroVm());
        await Host.RunAsync(sandbox, "for i in $(seq 1 200000); do :; done");
        using (var pause = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
        {
            Assert.Equal(HttpStatusCode.NoContent, pause.StatusCode);
        }

        await Task.Delay(1500);
        var usage = await Host.Http.GetFromJsonAsync("/usage", ApiJsonContext.Default.UsageReport);
        var mine = Assert.Single(usage!.Sandboxes, s => s.SandboxId == sandbox.SandboxId);
        Assert.Equal("paused", mine.State);
        Assert.True(mine.Usage.RunningSeconds > 0);
        Assert.Equal(mine.Usage.RunningSeconds, mine.Usage.VCpuSeconds, 3);
        Assert.Equal(mine.Usage.RunningSeconds * 0.5, mine.Usage.MemoryGiBSeconds, 3);
        Assert.True(mine.Usage.CpuSeconds > 0.05, $"cpu seconds {mine.Usage.CpuSeconds}");
        Assert.True(mine.Usage.PausedGiBHours > 0);
        Assert.True(usage.Total.RunningSeconds >= mine.Usage.RunningSeconds);
        await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
    }

    /// <summary>Probe-boot QEMUs this process started that are still alive after the probe finished (a timed-out probe must be killed).</summary>
    private static List<string> LingeringProbes()
    {
        var found = new List<string>();
        foreach (var proc in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                if (int.TryParse(Path.GetFileName(proc), out _)
                    && File.ReadAllText(Path.Combine(proc, "cmdline")).Contains("airlock.probe=1", StringComparison.Ordinal)
                    && File.ReadLines(Path.Combine(proc, "status")) is var status
                    && status.Any(l => l == $"PPid:\t{Environment.ProcessId}")
                    && !status.Any(l => l.StartsWith("State:\tZ", StringComparison.Ordinal)))
                {
                    found.Add(proc);
                }
            }
            catch (IOException)
            {
            }
        }

        return found;
    }

    private static bool QemuRunning(string sandboxId) => QemuPid(sandboxId) is not null;

    private static int? QemuPid(string sandboxId)
    {
        foreach (var proc in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(proc), out var pid))
            {
                try
                {
                    var cmdline = File.ReadAllText(Path.Combine(proc, "cmdline"));
                    if (cmdline.StartsWith("qemu-system", StringComparison.Ordinal) && cmdline.Contains($"airlock-{sandboxId}", StringComparison.Ordinal))
                    {
                        return pid;
                    }
                }
                catch (IOException)
                {
                }
            }
        }

        return null;
    }

    private static async Task Cli(string tool, params string[] args)
    {
        var result = await CliWrap.Cli.Wrap(tool).WithArguments(args).WithValidation(CliWrap.CommandResultValidation.None).ExecuteAsync();
        Assert.True(result.ExitCode == 0, $"{tool} {string.Join(' ', args)} failed");
    }
}

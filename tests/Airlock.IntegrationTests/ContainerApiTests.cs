using System.Net;
using System.Net.Http.Json;
using Airlock.Core.Api;
using Airlock.Testing;

namespace Airlock.IntegrationTests;

/// <summary>The container boundary through airlockd's API: risk medium, files, root, pause to disk and resume, limits.</summary>
[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class ContainerApiTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private AirlockHost Host => fixture.Host;

    private static NewSandboxRequest Medium(int? diskMB = null) => new() { TemplateId = "base", Risk = "medium", Timeout = 300, DiskMB = diskMB };

    [Fact(Timeout = 180_000)]
    public async Task Risk_medium_gets_a_container_that_reports_what_it_is_and_runs_commands_as_user_or_root()
    {
        var sandbox = await Host.CreateSandboxAsync(Medium());
        try
        {
            var report = sandbox.Boundary;
            Assert.Equal(("container", true), (report.Boundary, report.UserNamespace));
            Assert.Matches(@"^(runc|crun) ", report.Runtime);
            Assert.StartsWith("airlock-container-v1 sha256:", report.Seccomp, StringComparison.Ordinal);
            Assert.Contains(report.Cgroup, new[] { "v1", "v2" });
            Assert.Null(report.Downgrade);

            var (exit, stdout, _) = await Host.RunAsync(sandbox, "id -un; echo $HOME");
            Assert.Equal((0, "user\n/home/user\n"), (exit, stdout));

            await Host.Envd(sandbox).WriteFileAsync("/home/user/data.txt", new MemoryStream("from the api\n"u8.ToArray()), CancellationToken.None);
            var read = await Host.RunAsync(sandbox, "cat /home/user/data.txt; stat -c %U /home/user/data.txt");
            Assert.Equal("from the api\nuser\n", read.Stdout);

            var audit = await AuditTests.ReadAuditAsync(Host);
            Assert.Contains(audit, r => r.SandboxId == sandbox.SandboxId && r.Kind == "sandbox.boundary" && r.Data.Contains("\"container\"", StringComparison.Ordinal));
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }

        Assert.Empty(Leftovers.Find([sandbox.SandboxId], Host.DataDir));
    }

    [Fact(Timeout = 240_000)]
    public async Task Pause_to_disk_keeps_the_files_stops_the_processes_and_the_resumed_sandbox_says_so()
    {
        var sandbox = await Host.CreateSandboxAsync(Medium());
        try
        {
            await Host.RunAsync(sandbox, "echo before-pause > /home/user/kept.txt; nohup sleep 900 >/dev/null 2>&1 &");
            using (var pause = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause?mode=disk", null))
            {
                Assert.Equal(HttpStatusCode.NoContent, pause.StatusCode);
            }

            var paused = await Host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
            Assert.Equal("paused", paused!.State);
            // Nothing runs or is mounted for a paused container (other sandboxes' mounts may share the data dir).
            Assert.DoesNotContain(Leftovers.Find([sandbox.SandboxId], Host.DataDir), l => !l.StartsWith("mount", StringComparison.Ordinal) || l.Contains(sandbox.SandboxId, StringComparison.Ordinal));
            var audit = await AuditTests.ReadAuditAsync(Host);
            Assert.Contains(audit, r => r.SandboxId == sandbox.SandboxId && r.Kind == "sandbox.pause" && r.Data.Contains("processes were stopped", StringComparison.Ordinal));

            using var resume = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/connect", JsonContent.Create(new ResumeRequest { Timeout = 300 }, ApiJsonContext.Default.ResumeRequest));
            Assert.Equal(HttpStatusCode.Created, resume.StatusCode);
            var resumed = (await resume.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated))!;
            Assert.Contains("processes were stopped", resumed.Boundary.StartedFrom, StringComparison.Ordinal);
            var check = await Host.RunAsync(sandbox, "cat /home/user/kept.txt; pgrep -c sleep || true");
            Assert.Equal("before-pause\n0\n", check.Stdout);
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }

        Assert.Empty(Leftovers.Find([sandbox.SandboxId], Host.DataDir));
    }

    [Fact(Timeout = 240_000)]
    public async Task The_default_pause_freezes_the_container_in_place_and_resume_continues_its_processes()
    {
        var sandbox = await Host.CreateSandboxAsync(Medium());
        try
        {
            var start = await Host.RunAsync(sandbox, "nohup bash -c 'n=0; while true; do n=$((n+1)); echo $n > /tmp/hb.tmp; mv /tmp/hb.tmp /tmp/heartbeat; sleep 0.1; done' >/dev/null 2>&1 & echo $!");
            var pid = start.Stdout.Trim();
            await Task.Delay(500);
            using (var pause = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
            {
                Assert.Equal(HttpStatusCode.NoContent, pause.StatusCode);
            }

            var paused = await Host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
            Assert.Equal("paused", paused!.State);
            var heartbeat = File.ReadAllText(HeartbeatPath(sandbox.SandboxId));
            await Task.Delay(700);
            Assert.Equal(heartbeat, File.ReadAllText(HeartbeatPath(sandbox.SandboxId))); // nothing runs
            await Assert.ThrowsAnyAsync<Exception>(() => Host.RunAsync(sandbox, "true")); // envd refused while frozen
            using (var again = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
            {
                Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
            }

            var audit = await AuditTests.ReadAuditAsync(Host);
            Assert.Contains(audit, r => r.SandboxId == sandbox.SandboxId && r.Kind == "sandbox.pause" && r.Data.Contains("frozen in place", StringComparison.Ordinal));

            using var resume = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/connect", JsonContent.Create(new ResumeRequest { Timeout = 300 }, ApiJsonContext.Default.ResumeRequest));
            Assert.Equal(HttpStatusCode.Created, resume.StatusCode);
            var check = await Host.RunAsync(sandbox, $"kill -0 {pid} && echo alive; a=$(cat /tmp/heartbeat); sleep 0.5; b=$(cat /tmp/heartbeat); [ $b -gt $a ] && echo beating");
            Assert.Contains("alive", check.Stdout, StringComparison.Ordinal);
            Assert.Contains("beating", check.Stdout, StringComparison.Ordinal);

            // Killing a frozen sandbox works too, and leaves nothing.
            using (var pauseAgain = await Host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
            {
                Assert.Equal(HttpStatusCode.NoContent, pauseAgain.StatusCode);
            }
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }

        Assert.Empty(Leftovers.Find([sandbox.SandboxId], Host.DataDir));
    }

    [Fact(Timeout = 240_000)]
    public async Task A_frozen_container_survives_an_airlockd_restart_frozen_and_one_killed_at_shutdown_keeps_its_files()
    {
        // Kept on shutdown: the next airlockd re-adopts it frozen, and it resumes where it stopped.
        var first = await AirlockHost.StartAsync(o => o with { KeepSandboxesOnShutdown = true });
        var sandbox = await first.CreateSandboxAsync(Medium());
        var pid = (await first.RunAsync(sandbox, "nohup sleep 900 >/dev/null 2>&1 & echo $!")).Stdout.Trim();
        using (var pause = await first.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
        {
            Assert.Equal(HttpStatusCode.NoContent, pause.StatusCode);
        }

        await first.DisposeAsync();
        var second = await AirlockHost.StartAsync(dataDir: first.DataDir);
        try
        {
            var detail = await second.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
            Assert.Equal("paused", detail!.State);
            using var resume = await second.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/connect", JsonContent.Create(new ResumeRequest { Timeout = 300 }, ApiJsonContext.Default.ResumeRequest));
            Assert.Equal(HttpStatusCode.Created, resume.StatusCode);
            Assert.Contains("alive", (await second.RunAsync(sandbox, $"kill -0 {pid} && echo alive")).Stdout, StringComparison.Ordinal);

            // Not kept: a frozen sandbox is paused to disk at shutdown (files kept, processes stopped), not lost.
            await second.RunAsync(sandbox, "echo survives > /home/user/f.txt");
            using (var pause = await second.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null))
            {
                Assert.Equal(HttpStatusCode.NoContent, pause.StatusCode);
            }
        }
        finally
        {
            await second.DisposeAsync();
        }

        var third = await AirlockHost.StartAsync(dataDir: first.DataDir);
        try
        {
            var detail = await third.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
            Assert.Equal("paused", detail!.State);
            using var resume = await third.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/connect", JsonContent.Create(new ResumeRequest { Timeout = 300 }, ApiJsonContext.Default.ResumeRequest));
            Assert.Equal(HttpStatusCode.Created, resume.StatusCode);
            Assert.Equal("survives\n", (await third.RunAsync(sandbox, "cat /home/user/f.txt")).Stdout);
            await third.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }
        finally
        {
            await third.DisposeAsync();
        }

        Assert.Empty(Leftovers.Find([sandbox.SandboxId], first.DataDir));
        first.DeleteDataDir();
    }

    /// <summary>/tmp is a tmpfs inside the container: read the heartbeat through the container's init.</summary>
    private string HeartbeatPath(string sandboxId)
    {
        var pid = File.ReadAllText(Path.Combine(Host.DataDir, "sandboxes", sandboxId, "init.pid")).Trim();
        return $"/proc/{pid}/root/tmp/heartbeat";
    }

    [Theory(Timeout = 60_000)]
    [InlineData("{\"templateID\":\"base\",\"risk\":\"medium\",\"diskMB\":10}")]
    [InlineData("{\"templateID\":\"base\",\"risk\":\"medium\",\"diskMB\":99999999}")]
    [InlineData("{\"templateID\":\"base\",\"risk\":\"high\",\"diskMB\":128}")]
    public async Task A_disk_size_out_of_range_or_for_a_microvm_is_a_clear_400(string body)
    {
        using var content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
        using var response = await Host.Http.PostAsync("/sandboxes", content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("invalid_disk", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact(Timeout = 180_000)]
    public async Task The_requested_disk_size_is_the_quota()
    {
        var sandbox = await Host.CreateSandboxAsync(Medium(diskMB: 128));
        try
        {
            Assert.Equal(128, sandbox.Boundary.Limits.DiskMiB);
            var (_, stdout, _) = await Host.RunAsync(sandbox, "fallocate -l 200M /home/user/big 2>&1 || dd if=/dev/zero of=/home/user/big bs=1M count=200 2>&1 | grep -o 'No space left on device' | head -1");
            Assert.Contains("No space left on device", stdout, StringComparison.Ordinal);
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }
    }
}

using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using Airlock.Core.Api;
using Airlock.Testing;

namespace Airlock.IntegrationTests;

/// <summary>A sandbox whose agent stops answering is listed unresponsive, recovers when it answers, and can be killed.</summary>
[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class HealthTests
{
    [Fact(Timeout = 120_000)]
    public async Task A_stopped_agent_makes_its_sandbox_unresponsive_a_continued_one_running_and_an_unresponsive_sandbox_can_be_killed()
    {
        var host = await AirlockHost.StartAsync(o => o with { HealthInterval = TimeSpan.FromSeconds(1), HealthTimeout = TimeSpan.FromSeconds(1), HealthMisses = 3 });
        host.DeleteDataDirOnDispose = true;
        IReadOnlyList<string> leftovers;
        await using (host)
        {
            var sandbox = await host.CreateSandboxAsync();
            var agent = AgentPid(sandbox.SandboxId);
            try
            {
                Signal("STOP", agent);
                var info = await WaitForStateAsync(host, sandbox.SandboxId, "unresponsive");
                Assert.Contains("missed 3 health checks", info.FailureReason, StringComparison.Ordinal);
                using (var listed = await host.Http.GetAsync("/v2/sandboxes?state=running"))
                {
                    var items = await listed.Content.ReadFromJsonAsync(ApiJsonContext.Default.ListSandboxDetail);
                    var item = Assert.Single(items!, i => i.SandboxId == sandbox.SandboxId);
                    Assert.Equal(("running", "unresponsive"), (item.State, item.Health)); // E2B's SDKs know only running|paused

                }

                Signal("CONT", agent);
                info = await WaitForStateAsync(host, sandbox.SandboxId, "running");
                Assert.Null(info.FailureReason);
                Assert.Equal(0, (await host.RunAsync(sandbox, "true")).ExitCode);

                Signal("STOP", agent);
                await WaitForStateAsync(host, sandbox.SandboxId, "unresponsive");
                using var killed = await host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
                Assert.Equal(HttpStatusCode.NoContent, killed.StatusCode);
                Assert.Equal("killed", (await GetAsync(host, sandbox.SandboxId)).State);
                Assert.False(File.Exists($"/proc/{agent}/status") && !File.ReadAllText($"/proc/{agent}/status").Contains("zombie", StringComparison.Ordinal), "the agent outlived the kill");
            }
            finally
            {
                Signal("CONT", agent); // never leave a stopped process behind, whatever failed
            }

            leftovers = host.FindLeftovers();
        }

        Assert.True(leftovers.Count == 0, "leftovers:\n" + string.Join("\n", leftovers));
    }

    /// <summary>The guest agent of a process sandbox: the airlock-guest process in the sandbox's cgroup.</summary>
    private static int AgentPid(string sandboxId)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
            {
                continue;
            }

            try
            {
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                if (cmdline.Contains("airlock-guest", StringComparison.Ordinal) && !cmdline.Contains("bwrap", StringComparison.Ordinal)
                    && File.ReadAllText(Path.Combine(dir, "cgroup")).Contains(sandboxId, StringComparison.Ordinal))
                {
                    return pid;
                }
            }
            catch (IOException)
            {
                // gone meanwhile
            }
        }

        throw new InvalidOperationException($"no airlock-guest process in sandbox {sandboxId}'s cgroup");
    }

    private static void Signal(string signal, int pid)
    {
        using var kill = Process.Start("kill", [$"-{signal}", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
    }

    private static async Task<SandboxDetail> GetAsync(AirlockHost host, string sandboxId) =>
        (await host.Http.GetFromJsonAsync($"/sandboxes/{sandboxId}", ApiJsonContext.Default.SandboxDetail))!;

    private static async Task<SandboxDetail> WaitForStateAsync(AirlockHost host, string sandboxId, string state)
    {
        var until = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            var info = await GetAsync(host, sandboxId);
            if ((info.Health == "unresponsive" ? "unresponsive" : info.State) == state)
            {
                return info;
            }

            Assert.True(DateTime.UtcNow < until, $"sandbox {sandboxId} is still {info.State} after 30 s, waiting for {state}");
            await Task.Delay(200);
        }
    }
}

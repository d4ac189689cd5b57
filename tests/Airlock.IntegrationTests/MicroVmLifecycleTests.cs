using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using Airlock.Core.Api;
using Airlock.Testing;

namespace Airlock.IntegrationTests;

/// <summary>microVMs across airlockd crashes (SIGKILL while running, pausing and resuming) and the paused-sandbox reaper.</summary>
[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class MicroVmLifecycleTests
{
    [Fact(Timeout = 600_000)]
    public async Task After_SIGKILL_while_running_pausing_and_resuming_nothing_is_orphaned_and_paused_sandboxes_still_resume()
    {
        var dataDir = Path.Combine(Path.GetTempPath(), "airlock-vmcrash-" + Guid.NewGuid().ToString("N")[..10]);
        string running, paused, pausing, resuming;
        using (var daemon = await Daemon.StartAsync(dataDir, keep: true))
        {
            running = await daemon.CreateAsync();
            await daemon.RunAsync(running, "echo running > /home/user/r.txt");
            paused = await daemon.CreateAsync();
            await daemon.RunAsync(paused, "echo paused > /home/user/p.txt");
            (await daemon.Http.PostAsync($"/sandboxes/{paused}/pause", null)).EnsureSuccessStatusCode();
            resuming = await daemon.CreateAsync();
            await daemon.RunAsync(resuming, "echo resuming > /home/user/s.txt");
            (await daemon.Http.PostAsync($"/sandboxes/{resuming}/pause", null)).EnsureSuccessStatusCode();
            pausing = await daemon.CreateAsync();
            await daemon.RunAsync(pausing, "echo pausing > /home/user/q.txt");

            // Kill airlockd while one sandbox is being paused and another resumed.
            var pauseCall = daemon.Http.PostAsync($"/sandboxes/{pausing}/pause", null);
            var resumeCall = daemon.Http.PostAsync($"/sandboxes/{resuming}/connect", null);
            await Task.Delay(250);
            daemon.Kill();
            await Task.WhenAll(Swallow(pauseCall), Swallow(resumeCall));
        }

        var next = await AirlockHost.StartAsync(o => o with { KeepSandboxesOnShutdown = false }, dataDir: dataDir);
        var all = new[] { running, paused, pausing, resuming };
        try
        {
            var audit = await AuditTests.ReadAllAuditAsync(next);
            Assert.Contains(audit, r => r.Kind == "airlockd.reconcile" && r.Data.Contains(running, StringComparison.Ordinal));
            foreach (var (id, file, word) in new[] { (running, "r.txt", "running"), (paused, "p.txt", "paused"), (pausing, "q.txt", "pausing"), (resuming, "s.txt", "resuming") })
            {
                var detail = await next.Http.GetFromJsonAsync($"/sandboxes/{id}", ApiJsonContext.Default.SandboxDetail);
                Assert.True(detail!.State is "running" or "paused", $"{word} sandbox {id} is {detail.State} ({detail.FailureReason})");
                using var connect = await next.Http.PostAsync($"/sandboxes/{id}/connect", null);
                Assert.True(connect.StatusCode is HttpStatusCode.OK or HttpStatusCode.Created, $"{word}: {await connect.Content.ReadAsStringAsync()}");
                var created = (await connect.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated))!;
                var (exit, stdout, _) = await next.RunAsync(created, $"cat /home/user/{file}");
                Assert.Equal((0, word + "\n"), (exit, stdout));
            }
        }
        finally
        {
            foreach (var id in all)
            {
                await next.Http.DeleteAsync($"/sandboxes/{id}");
            }

            await next.DisposeAsync();
        }

        Assert.Empty(Leftovers.Find(all, dataDir));
        next.DeleteDataDir();
    }

    [Fact(Timeout = 300_000)]
    public async Task Paused_sandboxes_past_the_retention_are_reaped_with_their_files_and_audited()
    {
        await using var host = await AirlockHost.StartAsync(o => o with { PausedRetention = TimeSpan.FromSeconds(3), ReaperInterval = TimeSpan.FromSeconds(1) });
        try
        {
            var sandbox = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Timeout = 300 });
            (await host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null)).EnsureSuccessStatusCode();
            var stateDir = Path.Combine(host.DataDir, "sandboxes", sandbox.SandboxId);
            Assert.True(File.Exists(Path.Combine(stateDir, "memory.bin")));
            SandboxDetail? detail = null;
            for (var i = 0; i < 60; i++)
            {
                detail = await host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
                if (detail!.State == "killed")
                {
                    break;
                }

                await Task.Delay(500);
            }

            Assert.Equal("killed", detail!.State);
            Assert.False(Directory.Exists(stateDir));
            var audit = await AuditTests.ReadAllAuditAsync(host);
            Assert.Contains(audit, r => r.Kind == "sandbox.reaped" && r.SandboxId == sandbox.SandboxId && r.Data.Contains("bytesFreed", StringComparison.Ordinal));
            using var resume = await host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/resume", null);
            Assert.Equal(HttpStatusCode.NotFound, resume.StatusCode);
            Assert.Empty(Leftovers.Find([sandbox.SandboxId], host.DataDir));
        }
        finally
        {
            host.DeleteDataDir();
        }
    }

    [Fact(Timeout = 300_000)]
    public async Task A_sandbox_with_auto_pause_lets_a_command_in_flight_finish_then_pauses_at_its_timeout_and_resumes()
    {
        await using var host = await AirlockHost.StartAsync();
        try
        {
            // No race with the clock: the file is written under a long timeout, then the timeout is moved to 1 s while a
            // command runs; the pause waits for it (bounded by the grace) instead of cutting it.
            var sandbox = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Timeout = 120, AutoPause = true });
            await host.RunAsync(sandbox, "echo auto > /home/user/auto.txt");
            var inFlight = host.RunAsync(sandbox, "sleep 3; echo finished");
            await Task.Delay(500);
            using (var shorten = await host.Http.PostAsJsonAsync($"/sandboxes/{sandbox.SandboxId}/timeout", new TimeoutRequest { Timeout = 1 }, ApiJsonContext.Default.TimeoutRequest))
            {
                Assert.Equal(HttpStatusCode.NoContent, shorten.StatusCode);
            }

            Assert.Equal((0, "finished\n", ""), await inFlight);
            SandboxDetail? detail = null;
            for (var i = 0; i < 120; i++)
            {
                detail = await host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail);
                if (detail!.State == "paused")
                {
                    break;
                }

                await Task.Delay(500);
            }

            Assert.Equal("paused", detail!.State);
            Assert.Equal("pause", detail.Lifecycle!.OnTimeout);
            using (var metrics = await host.Http.GetAsync($"/sandboxes/{sandbox.SandboxId}/metrics"))
            {
                Assert.Equal(HttpStatusCode.Conflict, metrics.StatusCode); // a paused sandbox has no metrics
            }

            using var resume = await host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/connect", JsonContent.Create(new ResumeRequest { Timeout = 120 }, ApiJsonContext.Default.ResumeRequest));
            Assert.Equal(HttpStatusCode.Created, resume.StatusCode);
            Assert.Equal((0, "auto\n", ""), await host.RunAsync(sandbox, "cat /home/user/auto.txt"));
            await host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }
        finally
        {
            host.DeleteDataDir();
        }
    }

    [Theory(Timeout = 60_000)]
    [InlineData("{\"templateID\":\"base\",\"lifecycle\":{\"onTimeout\":\"explode\"}}", 400, "invalid_lifecycle")]
    [InlineData("{\"templateID\":\"base\",\"autoResume\":{\"enabled\":true}}", 400, "invalid_lifecycle")]
    [InlineData("{\"templateID\":\"base\",\"autoPauseMemory\":false}", 400, "invalid_lifecycle")]
    [InlineData("{\"templateID\":\"base\",\"risk\":\"low\",\"lifecycle\":{\"onTimeout\":\"pause\",\"keepMemory\":true}}", 422, "memory_not_kept")]
    [InlineData("{\"templateID\":\"base\",\"risk\":\"low\",\"network\":{\"allowOut\":[\"example.org\"]}}", 422, "egress_unavailable")]
    [InlineData("{\"templateID\":\"base\",\"risk\":\"low\",\"envVars\":{\"A B\":\"x\"}}", 400, "invalid_env")]
    public async Task A_lifecycle_or_network_the_boundary_cannot_honour_is_refused_up_front_and_nothing_starts(string body, int status, string code)
    {
        await using var host = await AirlockHost.StartAsync();
        try
        {
            using var refused = await host.Http.PostAsync("/v2/sandboxes", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
            Assert.Equal(status, (int)refused.StatusCode);
            Assert.Contains(code, await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            var listed = await host.Http.GetFromJsonAsync("/v2/sandboxes?state=creating,running,failed", ApiJsonContext.Default.ListSandboxDetail);
            Assert.Empty(listed!);
        }
        finally
        {
            host.DeleteDataDir();
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task The_tenant_quota_caps_memory_and_vcpus_over_all_running_sandboxes()
    {
        await using var host = await AirlockHost.StartAsync(o => o with { MaxTenantMemoryMiB = 768, MaxTenantVCpus = 2 });
        try
        {
            var first = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = "low", MemoryMB = 512 });
            using (var memory = await host.Http.PostAsJsonAsync("/sandboxes", new NewSandboxRequest { TemplateId = "base", Risk = "low", MemoryMB = 512 }, ApiJsonContext.Default.NewSandboxRequest))
            {
                Assert.Equal(HttpStatusCode.TooManyRequests, memory.StatusCode);
                Assert.Contains("memory_quota_exceeded", await memory.Content.ReadAsStringAsync());
            }

            using (var cpus = await host.Http.PostAsJsonAsync("/sandboxes", new NewSandboxRequest { TemplateId = "base", Risk = "low", MemoryMB = 128, CpuCount = 2 }, ApiJsonContext.Default.NewSandboxRequest))
            {
                Assert.Equal(HttpStatusCode.TooManyRequests, cpus.StatusCode);
                Assert.Contains("cpu_quota_exceeded", await cpus.Content.ReadAsStringAsync());
            }

            var small = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = "low", MemoryMB = 128 });
            await host.Http.DeleteAsync($"/sandboxes/{first.SandboxId}");
            await host.Http.DeleteAsync($"/sandboxes/{small.SandboxId}");
        }
        finally
        {
            host.DeleteDataDir();
        }
    }

    private static async Task Swallow(Task<HttpResponseMessage> call)
    {
        try
        {
            (await call).Dispose();
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
        {
            // airlockd died under the request: expected.
        }
    }

    /// <summary>airlockd as a child process (the CLI's serve), so the test can SIGKILL it.</summary>
    private sealed class Daemon : IDisposable
    {
        private readonly Process _process;

        private Daemon(Process process, HttpClient http)
        {
            _process = process;
            Http = http;
        }

        public HttpClient Http { get; }

        public static async Task<Daemon> StartAsync(string dataDir, bool keep)
        {
            var port = Loopback.FreePort();
            var cli = Path.Combine(Repo.Root, "artifacts", "cli", "airlock.dll");
            Assert.True(File.Exists(cli), "publish the CLI first (scripts/build.sh)");
            List<string> args = ["exec", cli, "serve", "--listen", $"http://127.0.0.1:{port}", "--data-dir", dataDir];
            if (keep)
            {
                args.Add("--keep-sandboxes");
            }

            var start = new ProcessStartInfo("dotnet", args) { RedirectStandardOutput = true, RedirectStandardError = true };
            start.Environment["AIRLOCK_TEMPLATES_DIR"] = AirlockHost.TemplatesDir;
            start.Environment["AIRLOCK_VM_CACHE_DIR"] = AirlockHost.VmCacheDir;
            var process = Process.Start(start)!;
            process.OutputDataReceived += (_, _) => { };
            process.ErrorDataReceived += (_, _) => { };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(120) };
            for (var i = 0; i < 600 && !File.Exists(Path.Combine(dataDir, "bootstrap-key")); i++)
            {
                await Task.Delay(100);
            }

            for (var i = 0; i < 100; i++)
            {
                try
                {
                    using var health = await http.GetAsync("/health");
                    if (health.IsSuccessStatusCode)
                    {
                        break;
                    }
                }
                catch (HttpRequestException)
                {
                }

                await Task.Delay(100);
            }

            http.DefaultRequestHeaders.Add("X-API-Key", (await File.ReadAllTextAsync(Path.Combine(dataDir, "bootstrap-key"))).Trim());
            return new Daemon(process, http);
        }

        public async Task<string> CreateAsync()
        {
            using var created = await Http.PostAsJsonAsync("/sandboxes", new NewSandboxRequest { TemplateId = "base", Timeout = 600 }, ApiJsonContext.Default.NewSandboxRequest);
            Assert.True(created.IsSuccessStatusCode, await created.Content.ReadAsStringAsync());
            return (await created.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated))!.SandboxId;
        }

        public async Task RunAsync(string id, string command)
        {
            var detail = (await Http.GetFromJsonAsync($"/sandboxes/{id}", ApiJsonContext.Default.SandboxDetail))!;
            using var envd = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
            var client = new Airlock.Envd.Client.EnvdClient(envd, new Airlock.Envd.Client.EnvdClientOptions
            {
                BaseAddress = Http.BaseAddress!,
                AccessToken = detail.EnvdAccessToken,
                Headers = new Dictionary<string, string> { ["E2b-Sandbox-Id"] = id, ["E2b-Sandbox-Port"] = "49983" },
            });
            var exit = -1;
            await foreach (var output in client.StartAsync(new Airlock.Envd.Client.ProcessSpec { Command = "/bin/bash", Args = ["-c", command] }, CancellationToken.None))
            {
                if (output is Airlock.Envd.Client.ProcessExited x)
                {
                    exit = x.ExitCode;
                }
            }

            Assert.Equal(0, exit);
        }

        public void Kill()
        {
            _process.Kill(entireProcessTree: false); // SIGKILL to airlockd alone
            _process.WaitForExit();
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                Kill();
            }

            _process.Dispose();
            Http.Dispose();
        }
    }
}

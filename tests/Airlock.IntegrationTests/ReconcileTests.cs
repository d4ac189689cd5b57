using System.Diagnostics;
using System.Net.Http.Json;
using Airlock.Core.Api;
using Airlock.Testing;

namespace Airlock.IntegrationTests;

[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class ReconcileTests
{
    [Theory(Timeout = 240_000)]
    [InlineData("low")]
    [InlineData("medium")]
    public async Task Sandboxes_kept_on_shutdown_are_re_adopted_by_the_next_airlockd(string risk)
    {
        var first = await AirlockHost.StartAsync(o => o with { KeepSandboxesOnShutdown = true });
        var sandbox = await first.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = risk, Timeout = 120 });
        var (_, before, _) = await first.RunAsync(sandbox, "echo kept > /home/user/state.txt; cat /home/user/state.txt");
        Assert.Equal("kept\n", before);
        await first.DisposeAsync();

        var second = await AirlockHost.StartAsync(dataDir: first.DataDir);
        try
        {
            var (exit, after, _) = await second.RunAsync(sandbox, "cat /home/user/state.txt");
            Assert.Equal((0, "kept\n"), (exit, after));
            var audit = await AuditTests.ReadAllAuditAsync(second);
            Assert.Contains(audit, r => r.Kind == "airlockd.reconcile" && r.Data.Contains("re-adopted", StringComparison.Ordinal));
        }
        finally
        {
            await second.DisposeAsync();
        }

        Assert.Empty(Leftovers.Find([sandbox.SandboxId], first.DataDir));
        first.DeleteDataDir();
    }

    [Theory(Timeout = 300_000)]
    [InlineData("low")]
    [InlineData("medium")]
    public async Task After_airlockd_is_killed_with_SIGKILL_the_next_start_cleans_every_orphan_and_audits_it(string risk)
    {
        var dataDir = Path.Combine(Path.GetTempPath(), "airlock-crash-" + Guid.NewGuid().ToString("N")[..10]);
        var port = Loopback.FreePort();
        var cli = Path.Combine(Repo.Root, "artifacts", "cli", "airlock.dll");
        Assert.True(File.Exists(cli), "publish the CLI first (scripts/build.sh)");
        var start = new ProcessStartInfo("dotnet", ["exec", cli, "serve", "--listen", $"http://127.0.0.1:{port}", "--data-dir", dataDir])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["AIRLOCK_TEMPLATES_DIR"] = AirlockHost.TemplatesDir;
        start.Environment["AIRLOCK_VM_CACHE_DIR"] = AirlockHost.VmCacheDir;
        using var daemon = Process.Start(start)!;
        daemon.OutputDataReceived += (_, _) => { };
        daemon.ErrorDataReceived += (_, _) => { };
        daemon.BeginOutputReadLine();
        daemon.BeginErrorReadLine();
        string id;
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(120) };
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
            using var created = await http.PostAsJsonAsync("/sandboxes", new NewSandboxRequest { TemplateId = "base", Risk = risk, Timeout = 120 }, ApiJsonContext.Default.NewSandboxRequest);
            Assert.True(created.IsSuccessStatusCode, await created.Content.ReadAsStringAsync());
            id = (await created.Content.ReadFromJsonAsync(ApiJsonContext.Default.SandboxCreated))!.SandboxId;
            Assert.NotEmpty(Leftovers.Find([id], dataDir));
        }
        finally
        {
            daemon.Kill(entireProcessTree: false); // SIGKILL to airlockd alone: no graceful shutdown runs
            await daemon.WaitForExitAsync();
        }

        // Whatever the crash left (netns, cgroups, overlay mount, state dir) is found and cleaned by the next start.
        var next = await AirlockHost.StartAsync(dataDir: dataDir);
        try
        {
            Assert.Empty(Leftovers.Find([id], dataDir));
            Assert.False(Directory.Exists(Path.Combine(dataDir, "sandboxes", id)));
            var detail = await next.Http.GetFromJsonAsync($"/sandboxes/{id}", ApiJsonContext.Default.SandboxDetail);
            Assert.Equal("failed", detail!.State);
            var audit = await AuditTests.ReadAllAuditAsync(next);
            Assert.Contains(audit, r => r.Kind == "airlockd.reconcile" && r.Data.Contains(id, StringComparison.Ordinal));
        }
        finally
        {
            await next.DisposeAsync();
            next.DeleteDataDir();
        }
    }
}

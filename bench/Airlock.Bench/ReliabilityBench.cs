using System.Diagnostics;
using System.Globalization;
using Airlock.Core.Api;
using Airlock.Testing;
using Airlock.Testing.Reliability;

/// <summary>
/// The reliability suite's long runs: the pause/resume soak (100 cycles per boundary by default) and the load run
/// (50 process sandboxes x 100 commands, 10 microVMs x 20), each with a baseline measured in the same run (raw bwrap
/// spawn, raw QEMU boot) and the ratio to it. The drivers are the ones the CI tests use (tests/Shared/Reliability).
/// </summary>
internal static class ReliabilityBench
{
    private static string Now => DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture);

    public static async Task<int> SoakAsync(int cycles, string boundaries)
    {
        await using var host = await AirlockHost.StartAsync();
        var failed = false;
        try
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# pause/resume soak, {Now} UTC, {Environment.ProcessorCount} cores, {cycles} cycles per boundary"));
            foreach (var boundary in boundaries.Split(','))
            {
                var (request, pause) = boundary switch
                {
                    "microvm" => (new NewSandboxRequest { TemplateId = "base", Risk = "high", Timeout = 86_000 }, (Func<int, PauseRequest?>)(_ => null)),
                    "container" => (new NewSandboxRequest { TemplateId = "base", Risk = "medium", Timeout = 86_000 }, c => c % 2 == 0 ? null : new PauseRequest { Memory = false }),
                    _ => (new NewSandboxRequest { TemplateId = "base", Risk = "low", Timeout = 86_000 }, (Func<int, PauseRequest?>)(_ => null)),
                };
                var sandbox = await host.CreateSandboxAsync(request);
                var sw = Stopwatch.StartNew();
                try
                {
                    using var cts = new CancellationTokenSource(TimeSpan.FromHours(2));
                    var results = await SoakDriver.RunAsync(host, sandbox, cycles, pause, c =>
                    {
                        if (c.Cycle < 3 || c.Cycle % 10 == 9)
                        {
                            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {boundary} cycle {c.Cycle + 1,3} ({c.PauseMode}): pause {c.PauseMs,7:F0} ms  resume {c.ResumeMs,7:F0} ms  verify {c.VerifyMs,6:F0} ms  {c.Files} files, growing file {c.GrowingBytes} bytes: all checksums equal"));
                        }
                    }, cts.Token);
                    var perCycle = sw.Elapsed.TotalSeconds / results.Count;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{boundary} ({sandbox.Boundary.Driver}, {sandbox.Boundary.Accelerator ?? "-"}): {results.Count} cycles, 0 files lost or changed, {sw.Elapsed.TotalMinutes:F1} min, {perCycle:F2} s per cycle (write + pause + resume + verify)"));
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  pause p50 {LoadResult.P(results.Select(r => r.PauseMs), 50),7:F0} ms  p99 {LoadResult.P(results.Select(r => r.PauseMs), 99),7:F0} ms   resume p50 {LoadResult.P(results.Select(r => r.ResumeMs), 50),7:F0} ms  p99 {LoadResult.P(results.Select(r => r.ResumeMs), 99),7:F0} ms"));
                }
                catch (InvalidOperationException ex)
                {
                    failed = true;
                    Console.WriteLine($"{boundary}: FAIL after {sw.Elapsed.TotalMinutes:F1} min: {ex.Message}");
                }
                finally
                {
                    await host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
                }
            }

            var leftovers = host.FindLeftovers();
            Console.WriteLine(leftovers.Count == 0 ? "leftovers after the runs: none" : "leftovers: " + string.Join("; ", leftovers));
            Console.WriteLine(failed || leftovers.Count > 0 ? "result: FAIL" : "result: PASS");
        }
        finally
        {
            host.DeleteDataDir();
        }

        return failed ? 1 : 0;
    }

    public static async Task<int> LoadAsync(int processes, int processCommands, int vms, int vmCommands, int createConcurrency)
    {
        // 50 sandboxes at 512 MiB and 1 vCPU each pass the default tenant quota (16 GiB, 8 vCPUs): raise it for the run.
        await using var host = await AirlockHost.StartAsync(o => o with { MaxSandboxesPerTenant = 64, MaxTenantMemoryMiB = 64 * 1024, MaxTenantVCpus = 128 });
        var errors = 0;
        try
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# load, {Now} UTC, nproc {Environment.ProcessorCount}, kernel {Environment.OSVersion.Version}, create concurrency {createConcurrency}"));
            var rootfs = Path.Combine(AirlockHost.TemplatesDir, "base", "rootfs");
            var rawBwrap = new List<double>();
            for (var i = 0; i < 20; i++)
            {
                rawBwrap.Add((await Stats.SpawnAsync(new ProcessStartInfo("bwrap", ["--ro-bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "--unshare-all", "--die-with-parent", "--new-session", "/bin/echo", "hi"]))).Exit);
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"baseline raw bwrap spawn->exit (echo), same run     p50 {LoadResult.P(rawBwrap, 50),8:F1} ms  p99 {LoadResult.P(rawBwrap, 99),8:F1} ms  (n={rawBwrap.Count})"));

            if (processes > 0)
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(30));
                var result = await LoadDriver.RunAsync(host, new NewSandboxRequest { TemplateId = "base", Risk = "low", Timeout = 3600 }, processes, processCommands, createConcurrency, cts.Token);
                Console.WriteLine(result.Describe("process"));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  ratio exec p50 under load / raw bwrap spawn p50 {LoadResult.P(result.ExecMs, 50) / LoadResult.P(rawBwrap, 50),6:F2}x"));
                PrintErrors(result);
                errors += result.Errors.Count;
            }

            if (vms > 0)
            {
                var warm = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = "high", Timeout = 600 });
                var accel = warm.Boundary.Accelerator ?? "tcg";
                await host.Http.DeleteAsync($"/sandboxes/{warm.SandboxId}");
                var rawBoot = new List<double>();
                for (var i = 0; i < 3; i++)
                {
                    rawBoot.Add(await MicroVmBench.RawBootAsync(accel));
                }

                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"baseline raw QEMU boot to /init ({accel})            p50 {LoadResult.P(rawBoot, 50),8:F1} ms  (n={rawBoot.Count})"));
                using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(30));
                var result = await LoadDriver.RunAsync(host, new NewSandboxRequest { TemplateId = "base", Risk = "high", Timeout = 3600 }, vms, vmCommands, Math.Min(createConcurrency, 5), cts.Token);
                Console.WriteLine(result.Describe($"microvm ({accel})"));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  ratio create p50 under load / raw QEMU boot p50 {LoadResult.P(result.CreateMs, 50) / LoadResult.P(rawBoot, 50),6:F2}x"));
                PrintErrors(result);
                errors += result.Errors.Count;
            }

            var leftovers = host.FindLeftovers();
            Console.WriteLine(leftovers.Count == 0 ? "leftovers after the runs: none" : "leftovers: " + string.Join("; ", leftovers));
            Console.WriteLine(errors == 0 && leftovers.Count == 0 ? "result: PASS (zero errors)" : $"result: FAIL ({errors} errors)");
            return errors == 0 && leftovers.Count == 0 ? 0 : 1;
        }
        finally
        {
            host.DeleteDataDir();
        }
    }

    private static void PrintErrors(LoadResult result)
    {
        foreach (var error in result.Errors.Take(10))
        {
            Console.WriteLine("  error: " + error);
        }
    }
}

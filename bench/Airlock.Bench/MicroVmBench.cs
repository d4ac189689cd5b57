using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using Airlock.Core.Api;
using Airlock.Envd.Client;
using Airlock.Testing;
using CliWrap;

/// <summary>
/// The microvm boundary against raw QEMU in the same run: cold boot to agent-ready vs raw <c>qemu -kernel -initrd</c>
/// reaching /init, snapshot create to first output, pause and resume, host RSS per idle sandbox.
/// </summary>
internal static class MicroVmBench
{
    public static async Task RunAsync(int coldRuns, int createRuns, int pauseRuns)
    {
        await using var host = await AirlockHost.StartAsync();
        try
        {
            var warm = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Timeout = 600 });
            await host.RunAsync(warm, "true");
            await host.Http.DeleteAsync($"/sandboxes/{warm.SandboxId}");
            var report = warm.Boundary;

            var raw = new List<double>();
            for (var i = 0; i < coldRuns; i++)
            {
                raw.Add(await RawBootAsync(report.Accelerator ?? "tcg"));
            }

            var cold = new List<double>();
            for (var i = 0; i < coldRuns; i++)
            {
                var sw = Stopwatch.StartNew();
                var sb = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Cold = true, Timeout = 600 });
                cold.Add(sw.Elapsed.TotalMilliseconds);
                await host.Http.DeleteAsync($"/sandboxes/{sb.SandboxId}");
            }

            var create = await Stats.CreateToFirstOutputAsync(host, new NewSandboxRequest { TemplateId = "base", Timeout = 600 }, createRuns);

            // Pause/resume of a guest that has touched ~256 MiB of its 512 MiB.
            var vm = await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Timeout = 1200 });
            await host.RunAsync(vm, "nohup python3 -c 'import time; b=bytearray(256*2**20); [b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; time.sleep(100000)' >/dev/null 2>&1 & sleep 8");
            long stateBytes = 0;
            var stateDir = Path.Combine(host.DataDir, "sandboxes", vm.SandboxId);
            var (pause, resume) = await Stats.PauseResumeAsync(host, vm.SandboxId, pauseRuns, () => stateBytes = new FileInfo(Path.Combine(stateDir, "memory.bin")).Length);

            await host.Http.DeleteAsync($"/sandboxes/{vm.SandboxId}");

            // Host memory per idle sandbox: QEMU's resident set after the guest settles.
            var idle = new List<SandboxCreated>();
            for (var i = 0; i < 3; i++)
            {
                idle.Add(await host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Timeout = 600 }));
            }

            await Task.Delay(TimeSpan.FromSeconds(5));
            var rss = idle.Select(s => QemuRssKiB(s.SandboxId)).ToList();
            foreach (var s in idle)
            {
                await host.Http.DeleteAsync($"/sandboxes/{s.SandboxId}");
            }

            var gib = stateBytes / (double)(1L << 30);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# microvm boundary benchmark, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, host kernel {Environment.OSVersion.Version}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# {report.Runtime}, machine {report.Machine}, accelerator {report.Accelerator} ({report.AcceleratorReason}), guest kernel {report.Kernel}, {report.Limits.MemoryMiB} MiB, {report.Limits.VCpus} vCPU"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"raw qemu -kernel -initrd -> /init        p50 {Stats.P(raw, 50),8:F0} ms  p90 {Stats.P(raw, 90),8:F0} ms  (n={raw.Count})"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"airlock cold boot -> agent ready        p50 {Stats.P(cold, 50),8:F0} ms  p90 {Stats.P(cold, 90),8:F0} ms  (n={cold.Count})"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"airlock snapshot create -> first output p50 {Stats.P(create, 50),8:F0} ms  p90 {Stats.P(create, 90),8:F0} ms  (n={create.Count})"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ratio snapshot create / raw cold boot   {Stats.P(create, 50) / Stats.P(raw, 50),8:F2}x  (goal <= 0.1x)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"pause (stop, state to disk, quit)       p50 {Stats.P(pause, 50),8:F0} ms  state {stateBytes / 1048576.0:F0} MiB  -> {Stats.P(pause, 50) / 1000 / gib:F2} s/GiB (goal <= 1 s/GiB)  (n={pause.Count})"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"resume (to agent answering, identity)   p50 {Stats.P(resume, 50),8:F0} ms  p90 {Stats.P(resume, 90),8:F0} ms  (goal <= 200 ms)  (n={resume.Count})"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"host RSS per idle sandbox (QEMU)        {rss.Average() / 1024.0,8:F0} MiB  (each: {string.Join(", ", rss.Select(r => (r / 1024).ToString(CultureInfo.InvariantCulture)))} MiB)"));
        }
        finally
        {
            host.DeleteDataDir();
        }
    }

    /// <summary>Raw QEMU, same machine and accelerator, booting the kernel with a busybox initramfs that prints at /init.</summary>
    internal static async Task<double> RawBootAsync(string accel)
    {
        var kernel = Directory.GetFiles("/boot", "vmlinuz-*-cloud-amd64").OrderDescending(StringComparer.Ordinal).First();
        var initrd = Path.Combine(AirlockHost.VmCacheDir, "probe", "probe.cpio");
        var tsc = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("cpu MHz", StringComparison.Ordinal));
        var khz = (long)(double.Parse(tsc[(tsc.IndexOf(':') + 1)..].Trim(), CultureInfo.InvariantCulture) * 1000);
        var sw = Stopwatch.StartNew();
        double reached = -1;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await Cli.Wrap("qemu-system-x86_64")
            .WithArguments([
                "-machine", "microvm,pit=on,pic=on,rtc=on,isa-serial=on", "-accel", accel == "kvm" ? "kvm" : "tcg,tb-size=64", "-cpu", accel == "kvm" ? "host" : "max",
                "-smp", "1", "-m", "512M", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
                "-kernel", kernel, "-initrd", initrd, "-append", $"console=ttyS0 quiet panic=-1 no_timer_check tsc_early_khz={khz}"])
            .WithStandardOutputPipe(PipeTarget.ToDelegate(line =>
            {
                if (reached < 0 && line.Contains("AIRLOCK-PROBE-OK", StringComparison.Ordinal))
                {
                    reached = sw.Elapsed.TotalMilliseconds;
                }
            }))
            .WithValidation(CommandResultValidation.None)
            .ExecuteAsync(cts.Token);
        return reached > 0 ? reached : throw new InvalidOperationException("raw QEMU did not reach /init");
    }

    private static long QemuRssKiB(string sandboxId)
    {
        foreach (var proc in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                if (int.TryParse(Path.GetFileName(proc), out _) && File.ReadAllText(Path.Combine(proc, "cmdline")).Contains($"airlock-{sandboxId}", StringComparison.Ordinal))
                {
                    var line = File.ReadLines(Path.Combine(proc, "status")).First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
                }
            }
            catch (IOException)
            {
            }
        }

        return 0;
    }
}

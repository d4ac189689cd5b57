// Whole-system benchmark of the process boundary: airlockd (in-process, real HTTP, YARP, netns, bwrap, agent) against
// raw bubblewrap doing the same work on the same rootfs in the same run. Prints medians and ratios.
using System.Diagnostics;
using System.Globalization;
using Airlock.Core.Api;
using Airlock.Envd.Client;
using Airlock.Testing;

if (args.Contains("--container"))
{
    await ContainerBench.RunAsync(Arg("--create-runs", 20), Arg("--raw-runs", 20));
    return;
}

if (args.Contains("--fuzz"))
{
    Environment.Exit(await FuzzBench.RunAsync(Arg("--seed", Environment.TickCount & 0xffff), Arg("--count", 10_000), args.Contains("--medium") ? "medium" : "low", args.Contains("--dry-run")));
}

if (args.Contains("--soak"))
{
    Environment.Exit(await ReliabilityBench.SoakAsync(Arg("--cycles", 100), Args("--boundaries", "microvm,container")));
}

if (args.Contains("--load"))
{
    Environment.Exit(await ReliabilityBench.LoadAsync(Arg("--processes", 50), Arg("--process-commands", 100), Arg("--vms", 10), Arg("--vm-commands", 20), Arg("--create-concurrency", 8)));
}

if (args.Contains("--microvm"))
{
    await MicroVmBench.RunAsync(Arg("--cold-runs", 3), Arg("--create-runs", 10), Arg("--pause-runs", 5));
    return;
}

var createRuns = Arg("--create-runs", 10);
var execRuns = Arg("--exec-runs", 200);
var rawRuns = Arg("--raw-runs", 20);
var pauseRuns = Arg("--pause-runs", 5);
var rootfs = Path.Combine(AirlockHost.TemplatesDir, "base", "rootfs");

await using var host = await AirlockHost.StartAsync();
try
{
    // Warm: build the template once, JIT the path.
    var warm = await host.CreateSandboxAsync();
    await host.RunAsync(warm, "true");
    await host.Http.DeleteAsync($"/sandboxes/{warm.SandboxId}");

    var create = await Stats.CreateToFirstOutputAsync(host, null, createRuns);

    var running = await host.CreateSandboxAsync();
    var envd = host.Envd(running);
    var exec = new List<double>();
    for (var i = 0; i < execRuns; i++)
    {
        var sw = Stopwatch.StartNew();
        await foreach (var _ in envd.StartAsync(new ProcessSpec { Command = "/bin/true" }, CancellationToken.None))
        {
        }

        exec.Add(sw.Elapsed.TotalMilliseconds);
    }

    var (pause, resume) = await Stats.PauseResumeAsync(host, running.SandboxId, pauseRuns);
    await host.Http.DeleteAsync($"/sandboxes/{running.SandboxId}");

    var rawFirst = new List<double>();
    var rawExit = new List<double>();
    for (var i = 0; i < rawRuns; i++)
    {
        var (first, exit) = await RawBwrapAsync(rootfs);
        rawFirst.Add(first);
        rawExit.Add(exit);
    }

    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# process boundary benchmark, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, kernel {Environment.OSVersion.Version}"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"airlock create->first output     p50 {Stats.P(create, 50),8:F1} ms  p90 {Stats.P(create, 90),8:F1} ms  (n={create.Count})"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"raw bwrap spawn->first output    p50 {Stats.P(rawFirst, 50),8:F1} ms  p90 {Stats.P(rawFirst, 90),8:F1} ms  (n={rawFirst.Count})"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ratio create / raw bwrap         {Stats.P(create, 50) / Stats.P(rawFirst, 50),8:F2}x  (goal <= 3x)"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"airlock exec round trip (true)   p50 {Stats.P(exec, 50),8:F2} ms  p90 {Stats.P(exec, 90),8:F2} ms  (n={exec.Count}, goal p50 <= 5 ms)"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"raw bwrap spawn->exit (true)     p50 {Stats.P(rawExit, 50),8:F2} ms  (n={rawExit.Count})"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ratio exec / raw bwrap spawn     {Stats.P(exec, 50) / Stats.P(rawExit, 50),8:F2}x"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"pause (files kept, processes end) p50 {Stats.P(pause, 50),7:F1} ms  p90 {Stats.P(pause, 90),8:F1} ms  (n={pause.Count})"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"resume (new bwrap on the layer)   p50 {Stats.P(resume, 50),7:F1} ms  p90 {Stats.P(resume, 90),8:F1} ms  (n={resume.Count}; ratio to create {Stats.P(resume, 50) / Stats.P(create, 50):F2}x)"));
}
finally
{
    host.DeleteDataDir();
}

static Task<(double First, double Exit)> RawBwrapAsync(string rootfs) =>
    Stats.SpawnAsync(new ProcessStartInfo("bwrap", ["--ro-bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "--unshare-all", "--die-with-parent", "--new-session", "/bin/echo", "hi"]));

int Arg(string name, int fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
}

string Args(string name, string fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}

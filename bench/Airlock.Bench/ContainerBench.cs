using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Airlock.Core.Api;
using Airlock.Envd.Client;
using Airlock.Testing;
using CliWrap;

/// <summary>
/// The container boundary against raw <c>runc run</c> of the same bundle in the same run. Airlock's number is the whole
/// create: API, network namespace, layer image, idmapped template, cgroups, bundle, runtime, agent, identity, then the
/// first byte of <c>echo hi</c> through the agent. The raw number is <c>runc run</c> of the config.json Airlock wrote
/// for a live sandbox (same rootfs, user namespace, seccomp, masks, limits) with <c>echo hi</c> as its process.
/// </summary>
internal static class ContainerBench
{
    public static async Task RunAsync(int createRuns, int rawRuns)
    {
        await using var host = await AirlockHost.StartAsync();
        try
        {
            var request = new NewSandboxRequest { TemplateId = "base", Risk = "medium", Timeout = 600 };
            var warm = await host.CreateSandboxAsync(request);
            await host.RunAsync(warm, "true");
            await host.Http.DeleteAsync($"/sandboxes/{warm.SandboxId}");

            var create = await Stats.CreateToFirstOutputAsync(host, request, createRuns);

            // The donor: a live sandbox whose bundle (and mounted rootfs and network namespace) raw runc reuses.
            var donor = await host.CreateSandboxAsync(request);
            var bundle = Path.Combine(host.DataDir, "bench-bundle");
            Directory.CreateDirectory(bundle);
            var spec = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(host.DataDir, "sandboxes", donor.SandboxId, "bundle", "config.json")))!;
            spec["process"]!["args"] = new JsonArray("/bin/echo", "hi");
            var raw = new List<double>();
            for (var i = 0; i < rawRuns; i++)
            {
                var id = $"bench-{i}-{Guid.NewGuid():N}"[..20];
                spec["linux"]!["cgroupsPath"] = $"/airlock-bench/{id}";
                await File.WriteAllTextAsync(Path.Combine(bundle, "config.json"), spec.ToJsonString());
                raw.Add(await RawRuncAsync(bundle, id));
            }

            // Pause (frozen in place: the default keeps memory) and resume (thaw), then pause to disk and resume (files only).
            var (freeze, thaw) = await Stats.PauseResumeAsync(host, donor.SandboxId, 5);
            await host.Http.DeleteAsync($"/sandboxes/{donor.SandboxId}");
            var runtime = donor.Boundary.Runtime;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# container boundary benchmark, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, {runtime}, cgroup {donor.Boundary.Cgroup}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"airlock create->first output     p50 {Stats.P(create, 50),8:F1} ms  p90 {Stats.P(create, 90),8:F1} ms  (n={create.Count})"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"raw runc run (same bundle)       p50 {Stats.P(raw, 50),8:F1} ms  p90 {Stats.P(raw, 90),8:F1} ms  (n={raw.Count})"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ratio create / raw runc run      {Stats.P(create, 50) / Stats.P(raw, 50),8:F2}x  (goal <= 1.5x)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"pause (frozen in place)          p50 {Stats.P(freeze, 50),8:F1} ms  p90 {Stats.P(freeze, 90),8:F1} ms  (n={freeze.Count})"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"resume (thaw, agent answering)   p50 {Stats.P(thaw, 50),8:F1} ms  p90 {Stats.P(thaw, 90),8:F1} ms  (n={thaw.Count})"));
        }
        finally
        {
            host.DeleteDataDir();
            foreach (var controller in Directory.EnumerateDirectories("/sys/fs/cgroup"))
            {
                if (Directory.Exists(Path.Combine(controller, "airlock-bench")))
                {
                    Directory.Delete(Path.Combine(controller, "airlock-bench"));
                }
            }
        }
    }

    /// <summary>Milliseconds from spawning <c>runc run</c> to the first byte the container prints.</summary>
    private static async Task<double> RawRuncAsync(string bundle, string id)
    {
        var (first, _) = await Stats.SpawnAsync(new ProcessStartInfo("runc", ["--root", "/run/airlock/bench", "run", "--bundle", bundle, id]));
        await Cli.Wrap("runc").WithArguments(["--root", "/run/airlock/bench", "delete", "--force", id]).WithValidation(CommandResultValidation.None).ExecuteAsync();
        foreach (var controller in Directory.EnumerateDirectories("/sys/fs/cgroup"))
        {
            var dir = Path.Combine(controller, "airlock-bench", id);
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir);
            }
        }

        return first;
    }
}

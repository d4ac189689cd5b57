using System.Diagnostics;
using Airlock.Core.Api;
using Airlock.Envd.Client;
using Airlock.Testing;

/// <summary>The measurements every benchmark takes, and their percentiles (nearest rank).</summary>
internal static class Stats
{
    public static double P(List<double> values, int percentile)
    {
        var sorted = values.Order().ToList();
        return sorted[Math.Clamp((int)Math.Ceiling(percentile / 100.0 * sorted.Count) - 1, 0, sorted.Count - 1)];
    }

    /// <summary>Milliseconds from asking airlockd for a sandbox to the first byte of <c>echo hi</c> inside it, <paramref name="runs"/> times.</summary>
    public static async Task<List<double>> CreateToFirstOutputAsync(AirlockHost host, NewSandboxRequest? request, int runs)
    {
        var times = new List<double>();
        for (var i = 0; i < runs; i++)
        {
            var sw = Stopwatch.StartNew();
            var sb = await host.CreateSandboxAsync(request);
            await foreach (var output in host.Envd(sb).StartAsync(new ProcessSpec { Command = "/bin/echo", Args = ["hi"] }, CancellationToken.None))
            {
                if (output is ProcessStdout)
                {
                    times.Add(sw.Elapsed.TotalMilliseconds);
                    break;
                }
            }

            await host.Http.DeleteAsync($"/sandboxes/{sb.SandboxId}");
        }

        return times;
    }

    /// <summary>
    /// Milliseconds of <paramref name="runs"/> pause → connect cycles of one sandbox through the API (pause with the
    /// boundary's default; connect until the agent answers), calling <paramref name="afterPause"/> while it is paused.
    /// </summary>
    public static async Task<(List<double> Pause, List<double> Resume)> PauseResumeAsync(AirlockHost host, string sandboxId, int runs, Action? afterPause = null)
    {
        var pause = new List<double>();
        var resume = new List<double>();
        for (var i = 0; i < runs; i++)
        {
            var sw = Stopwatch.StartNew();
            (await host.Http.PostAsync($"/sandboxes/{sandboxId}/pause", null)).EnsureSuccessStatusCode();
            pause.Add(sw.Elapsed.TotalMilliseconds);
            afterPause?.Invoke();
            sw.Restart();
            (await host.Http.PostAsync($"/sandboxes/{sandboxId}/connect", System.Net.Http.Json.JsonContent.Create(new ResumeRequest { Timeout = 1200 }, ApiJsonContext.Default.ResumeRequest))).EnsureSuccessStatusCode();
            resume.Add(sw.Elapsed.TotalMilliseconds);
        }

        return (pause, resume);
    }

    /// <summary>Milliseconds from spawning a raw tool to its first byte of output, and to its exit.</summary>
    public static async Task<(double First, double Exit)> SpawnAsync(ProcessStartInfo start)
    {
        start.RedirectStandardOutput = true;
        var sw = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var buffer = new char[16];
        await process.StandardOutput.ReadAsync(buffer);
        var first = sw.Elapsed.TotalMilliseconds;
        await process.WaitForExitAsync();
        return (first, sw.Elapsed.TotalMilliseconds);
    }
}

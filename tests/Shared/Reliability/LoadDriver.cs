using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Airlock.Core.Api;
using Airlock.Envd.Client;

namespace Airlock.Testing.Reliability;

/// <summary>What a load run measured: latencies in milliseconds and every error with what caused it.</summary>
public sealed class LoadResult
{
    public ConcurrentBag<double> CreateMs { get; } = [];
    public ConcurrentBag<double> ExecMs { get; } = [];
    public ConcurrentQueue<string> Errors { get; } = new();
    public TimeSpan Elapsed { get; set; }
    public int Sandboxes { get; init; }
    public int CommandsPerSandbox { get; init; }
    public int PeakConcurrent { get; set; }

    public static double P(IEnumerable<double> values, int percentile)
    {
        var sorted = values.Order().ToList();
        return sorted.Count == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(percentile / 100.0 * sorted.Count) - 1, 0, sorted.Count - 1)];
    }

    public string Describe(string label) => string.Create(CultureInfo.InvariantCulture,
        $"""
        {label}: {Sandboxes} sandboxes x {CommandsPerSandbox} commands, {PeakConcurrent} running at once, {Elapsed.TotalSeconds:F1} s, {Errors.Count} errors
          create (API to agent ready)  p50 {P(CreateMs, 50),8:F1} ms  p99 {P(CreateMs, 99),8:F1} ms  (n={CreateMs.Count})
          exec (echo, round trip)      p50 {P(ExecMs, 50),8:F1} ms  p99 {P(ExecMs, 99),8:F1} ms  (n={ExecMs.Count})
        """);
}

/// <summary>
/// N sandboxes created (a few at a time), all alive together, each running M commands in sequence while the others
/// do the same, every output checked; then all killed. Bounded by the caller's token.
/// </summary>
public static class LoadDriver
{
    public static async Task<LoadResult> RunAsync(AirlockHost host, NewSandboxRequest request, int sandboxes, int commands, int createConcurrency, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(host);
        var result = new LoadResult { Sandboxes = sandboxes, CommandsPerSandbox = commands };
        var created = new ConcurrentBag<SandboxCreated>();
        var total = Stopwatch.StartNew();
        try
        {
            await Parallel.ForEachAsync(Enumerable.Range(0, sandboxes), new ParallelOptions { MaxDegreeOfParallelism = createConcurrency, CancellationToken = cancellationToken }, async (i, ct) =>
            {
                var sw = Stopwatch.StartNew();
                try
                {
                    var sandbox = await host.CreateSandboxAsync(request, ct);
                    result.CreateMs.Add(sw.Elapsed.TotalMilliseconds);
                    created.Add(sandbox);
                }
                catch (Exception ex) when (ex is InvalidOperationException or HttpRequestException or TaskCanceledException)
                {
                    result.Errors.Enqueue($"create {i}: {ex.Message}");
                }
            });

            result.PeakConcurrent = created.Count;
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(120) };
            await Parallel.ForEachAsync(created, new ParallelOptions { MaxDegreeOfParallelism = created.Count, CancellationToken = cancellationToken }, async (sandbox, ct) =>
            {
                var envd = host.Envd(sandbox, http);
                for (var n = 0; n < commands; n++)
                {
                    var sw = Stopwatch.StartNew();
                    try
                    {
                        var stdout = new System.Text.StringBuilder();
                        var exit = -1;
                        await foreach (var output in envd.StartAsync(new ProcessSpec { Command = "/bin/echo", Args = [n.ToString(CultureInfo.InvariantCulture)] }, ct))
                        {
                            switch (output)
                            {
                                case ProcessStdout o: stdout.Append(System.Text.Encoding.UTF8.GetString(o.Data.Span)); break;
                                case ProcessExited x: exit = x.ExitCode; break;
                            }
                        }

                        result.ExecMs.Add(sw.Elapsed.TotalMilliseconds);
                        if (exit != 0 || stdout.ToString() != n.ToString(CultureInfo.InvariantCulture) + "\n")
                        {
                            result.Errors.Enqueue($"{sandbox.SandboxId} command {n}: exit {exit}, stdout '{stdout}'");
                        }
                    }
                    catch (Exception ex) when (ex is EnvdException or HttpRequestException or TaskCanceledException or IOException)
                    {
                        result.Errors.Enqueue($"{sandbox.SandboxId} command {n}: {ex.GetType().Name}: {ex.Message}");
                    }
                }
            });
        }
        finally
        {
            await Parallel.ForEachAsync(created, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (sandbox, _) =>
            {
                using var killed = await host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}", CancellationToken.None);
                if (!killed.IsSuccessStatusCode)
                {
                    result.Errors.Enqueue($"kill {sandbox.SandboxId}: {(int)killed.StatusCode}");
                }
            });
            result.Elapsed = total.Elapsed;
        }

        return result;
    }
}

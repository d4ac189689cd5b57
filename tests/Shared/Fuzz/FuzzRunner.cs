using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Airlock.Testing.Fuzz;

/// <summary>What one fuzz request got back.</summary>
public sealed record FuzzOutcome(FuzzRequest Request, int Status, string Problem, string BodyStart);

/// <summary>A run's counts and the requests that broke a rule.</summary>
public sealed class FuzzSummary
{
    public required int Seed { get; init; }
    public int Sent { get; set; }
    public TimeSpan Elapsed { get; set; }
    public ConcurrentDictionary<string, int> ByStatus { get; } = new(StringComparer.Ordinal);
    public ConcurrentDictionary<string, int> ByFamily { get; } = new(StringComparer.Ordinal);
    public ConcurrentQueue<FuzzOutcome> Failures { get; } = new();

    /// <summary>The first request (lowest index) that got each status: a replay handle for every kind of answer.</summary>
    public ConcurrentDictionary<int, int> FirstByStatus { get; } = new();

    public string Describe()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"fuzz seed {Seed}: {Sent} requests in {Elapsed.TotalSeconds:F1} s ({Sent / Math.Max(Elapsed.TotalSeconds, 0.001):F0}/s), {Failures.Count} broke a rule\n");
        sb.Append("  by status: ").AppendJoin(", ", ByStatus.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}")).Append('\n');
        sb.Append("  first request per status: ").AppendJoin(", ", FirstByStatus.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}=#{kv.Value}")).Append('\n');
        sb.Append("  by family: ").AppendJoin(", ", ByFamily.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}")).Append('\n');
        // Every kind of failure (rule, status, family) with its count and its first two requests, replayable by index.
        foreach (var kind in Failures.GroupBy(f => (f.Problem, f.Status, f.Request.Family)).OrderBy(g => g.Min(f => f.Request.Index)))
        {
            sb.Append(CultureInfo.InvariantCulture, $"  FAIL x{kind.Count()} {kind.Key.Problem} (status {kind.Key.Status}, {kind.Key.Family}), requests #")
              .AppendJoin(", #", kind.Select(f => f.Request.Index).Order().Take(20)).Append('\n');
            foreach (var failure in kind.OrderBy(f => f.Request.Index).Take(2))
            {
                sb.Append("    ").Append(failure.Request.Describe().Replace("\n", "\n    ", StringComparison.Ordinal))
                  .Append("\n      answer: ").Append(failure.BodyStart).Append('\n');
            }
        }

        return sb.ToString();
    }
}

/// <summary>
/// Sends fuzz requests to a loopback airlockd, each on its own connection, a few at a time, and checks each answer
/// against the rules: no 5xx (but E2B's designed 502 for a sandbox not running), no 2xx where credentials do not fit,
/// an answer to every request the client did not abandon, within a deadline per request.
/// </summary>
public static class FuzzRunner
{
    private const int MaxResponseBytes = 4 << 20;

    public static async Task<FuzzSummary> RunAsync(IPEndPoint server, IEnumerable<FuzzRequest> requests, int seed, int concurrency, TimeSpan perRequest, TimeSpan total, CancellationToken cancellationToken)
    {
        if (!IPAddress.IsLoopback(server.Address))
        {
            throw new ArgumentException("fuzz traffic goes to loopback only", nameof(server));
        }

        var summary = new FuzzSummary { Seed = seed };
        var sw = Stopwatch.StartNew();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(total);
        var host = server.ToString();
        try
        {
            await Parallel.ForEachAsync(requests, new ParallelOptions { MaxDegreeOfParallelism = concurrency, CancellationToken = deadline.Token }, async (request, ct) =>
            {
                var outcome = await SendAsync(server, host, request, perRequest, ct);
                summary.ByStatus.AddOrUpdate(outcome.Status == 0 ? "none" : outcome.Status.ToString(CultureInfo.InvariantCulture), 1, (_, n) => n + 1);
                summary.ByFamily.AddOrUpdate(request.Family, 1, (_, n) => n + 1);
                summary.FirstByStatus.AddOrUpdate(outcome.Status, request.Index, (_, i) => Math.Min(i, request.Index));
                if (outcome.Problem.Length > 0)
                {
                    summary.Failures.Enqueue(outcome);
                }

                lock (summary)
                {
                    summary.Sent++;
                }
            });
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // The run's time budget is spent: the summary says how many were sent.
        }

        summary.Elapsed = sw.Elapsed;
        return summary;
    }

    public static async Task<FuzzOutcome> SendAsync(IPEndPoint server, string hostHeader, FuzzRequest request, TimeSpan perRequest, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(perRequest);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        var wire = request.ToWire(hostHeader);
        var received = new MemoryStream();
        try
        {
            await socket.ConnectAsync(server, timeout.Token);
            if (request.Cut != FuzzCut.None)
            {
                var cut = request.Cut == FuzzCut.MidHeaders ? Math.Min(wire.Length - request.Body.Length, 40) : wire.Length - Math.Max(1, request.Body.Length / 2);
                await socket.SendAsync(wire.AsMemory(0, Math.Max(1, cut)), timeout.Token);
                socket.LingerState = new LingerOption(true, 0); // RST: the client vanishes
                return new FuzzOutcome(request, 0, "", "");
            }

            await SendAllAsync(socket, wire, timeout.Token);
            var buffer = new byte[64 * 1024];
            while (received.Length < MaxResponseBytes)
            {
                var n = await socket.ReceiveAsync(buffer, timeout.Token);
                if (n == 0)
                {
                    break;
                }

                received.Write(buffer, 0, n);
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            var (status, _) = Parse(received);
            return new FuzzOutcome(request, status, $"no complete answer within {perRequest.TotalSeconds:F0} s", Snippet(received));
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown)
        {
            // The server may close early on a request it refuses (e.g. a body it will not read); judged below on what came.
        }

        var (code, body) = Parse(received);
        return new FuzzOutcome(request, code, Judge(request, code, body), Snippet(received));
    }

    private static async Task SendAllAsync(Socket socket, byte[] wire, CancellationToken cancellationToken)
    {
        try
        {
            for (var sent = 0; sent < wire.Length;)
            {
                sent += await socket.SendAsync(wire.AsMemory(sent), cancellationToken);
            }
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown)
        {
            // The server answered (e.g. 431, 413) and closed before reading everything: its answer is what counts.
        }
    }

    private static string Judge(FuzzRequest request, int status, string body)
    {
        if (status == 0)
        {
            return "connection closed without an answer";
        }

        if (status >= 500)
        {
            var designedNotFound = status == 502 && request.NamesNoRunningSandbox
                && (body.Contains("The sandbox was not found", StringComparison.Ordinal) || body.Contains("port_not_exposed", StringComparison.Ordinal));
            return designedNotFound ? "" : "server error";
        }

        if (request.Expect == FuzzExpect.Rejected && status is < 400)
        {
            return "accepted credentials that do not fit";
        }

        if (body.Contains("\"code\":\"internal\"", StringComparison.Ordinal))
        {
            return "internal error inside the answer";
        }

        return "";
    }

    private static (int Status, string Body) Parse(MemoryStream received)
    {
        var text = Encoding.UTF8.GetString(received.GetBuffer(), 0, (int)Math.Min(received.Length, 256 * 1024));
        if (!text.StartsWith("HTTP/1.", StringComparison.Ordinal) || text.Length < 12 || !int.TryParse(text.AsSpan(9, 3), NumberStyles.None, CultureInfo.InvariantCulture, out var status))
        {
            return (0, text);
        }

        // Skip interim 100 Continue answers.
        while (status == 100 && text.IndexOf("\r\n\r\n", StringComparison.Ordinal) is var end and > 0 && text.Length > end + 16)
        {
            text = text[(end + 4)..];
            if (!int.TryParse(text.AsSpan(9, 3), NumberStyles.None, CultureInfo.InvariantCulture, out status))
            {
                return (0, text);
            }
        }

        return (status, text);
    }

    private static string Snippet(MemoryStream received)
    {
        var text = Encoding.UTF8.GetString(received.GetBuffer(), 0, (int)Math.Min(received.Length, 600)).ReplaceLineEndings(" | ");
        return new string(text.Select(ch => char.IsControl(ch) ? '.' : ch).ToArray());
    }
}

using System.Collections.Concurrent;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Live;

namespace Airlock.Sandboxes;

/// <summary>One metrics entry of a sandbox, as E2B's <c>GET /sandboxes/{id}/metrics</c> reports it.</summary>
public sealed record SandboxMetric(DateTimeOffset At, int CpuCount, double CpuUsedPct, long MemUsed, long MemTotal, long DiskUsed, long DiskTotal);

/// <summary>
/// Samples running sandboxes every few seconds (and at once when asked about one with no sample yet): the driver's
/// cgroup and writable layer for process and container, the guest agent for a microVM (its own kernel). Keeps the last
/// half hour per sandbox.
/// </summary>
internal sealed class SandboxMetrics(SandboxContext context)
{
    private const int Keep = 360;
    private readonly ConcurrentDictionary<string, Series> _series = new(StringComparer.Ordinal);

    public static TimeSpan Interval { get; } = TimeSpan.FromSeconds(5);

    public async Task<IReadOnlyList<SandboxMetric>> ReadAsync(LiveSandbox live, DateTimeOffset? from, DateTimeOffset? to, CancellationToken cancellationToken)
    {
        var series = _series.GetOrAdd(live.Record.SandboxId, _ => new Series());
        if (series.Count == 0)
        {
            await SampleAsync(live, cancellationToken);
        }

        return series.Snapshot().Where(m => (from is null || m.At >= from) && (to is null || m.At <= to)).ToList();
    }

    /// <summary>One pass over every running sandbox; a sandbox that cannot be sampled now is skipped.</summary>
    public async Task SampleAllAsync(CancellationToken cancellationToken)
    {
        foreach (var live in context.Registry.All.ToList())
        {
            if (live.Serving)
            {
                try
                {
                    await SampleAsync(live, cancellationToken);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    LifecycleLog.Unexpected(context.Logger, ex, $"metrics of {live.Record.SandboxId}");
                }
            }
        }

        foreach (var id in _series.Keys)
        {
            if (!context.Registry.Contains(id))
            {
                _series.TryRemove(id, out _);
            }
        }
    }

    private async Task SampleAsync(LiveSandbox live, CancellationToken cancellationToken)
    {
        var record = live.Record;
        var sample = await live.Instance.SampleAsync(cancellationToken);
        if (record.Boundary == BoundaryKind.MicroVm || sample is null)
        {
            sample = (record.AccessToken is { } token ? await context.Agent.GuestMetricsAsync(record.SandboxId, token, cancellationToken) : null) ?? sample;
        }

        if (sample is null)
        {
            return;
        }

        var series = _series.GetOrAdd(record.SandboxId, _ => new Series());
        var cpus = sample.CpuCount > 0 ? sample.CpuCount : record.Limits.VCpus;
        var pct = sample.CpuUsedPct ?? series.CpuPercent(sample, cpus, record.CreatedAt);
        series.Add(new SandboxMetric(sample.At, cpus, Math.Round(pct, 2), sample.MemoryUsedBytes,
            sample.MemoryTotalBytes > 0 ? sample.MemoryTotalBytes : (long)record.Limits.MemoryMiB << 20,
            sample.DiskUsedBytes, sample.DiskTotalBytes), sample);
    }

    private sealed class Series
    {
        private readonly Lock _lock = new();
        private readonly Queue<SandboxMetric> _entries = new();
        private ResourceSample? _last;

        public int Count
        {
            get
            {
                lock (_lock)
                {
                    return _entries.Count;
                }
            }
        }

        /// <summary>CPU use since the previous sample (or since the sandbox started), in percent of its cores.</summary>
        public double CpuPercent(ResourceSample sample, int cpus, DateTimeOffset started)
        {
            lock (_lock)
            {
                if (sample.CpuUsed is not { } used)
                {
                    return 0;
                }

                var (sinceCpu, sinceAt) = _last is { CpuUsed: { } before } last ? (before, last.At) : (TimeSpan.Zero, started);
                var wall = (sample.At - sinceAt).TotalSeconds * Math.Max(1, cpus);
                return wall <= 0 ? 0 : Math.Clamp((used - sinceCpu).TotalSeconds / wall * 100, 0, 100);
            }
        }

        public void Add(SandboxMetric metric, ResourceSample sample)
        {
            lock (_lock)
            {
                _last = sample;
                _entries.Enqueue(metric);
                while (_entries.Count > Keep)
                {
                    _entries.Dequeue();
                }
            }
        }

        public SandboxMetric[] Snapshot()
        {
            lock (_lock)
            {
                return [.. _entries];
            }
        }
    }
}

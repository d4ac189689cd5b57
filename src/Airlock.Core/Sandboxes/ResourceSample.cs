namespace Airlock.Core.Sandboxes;

/// <summary>
/// One reading of what a running sandbox uses, taken by its driver (cgroup and writable layer) or its guest (own
/// kernel). <see cref="CpuUsed"/> is cumulative; the metrics sampler turns two readings into a percentage.
/// </summary>
public sealed record ResourceSample
{
    public required DateTimeOffset At { get; init; }
    public int CpuCount { get; init; }
    /// <summary>CPU time used since the sandbox started (cumulative), when known.</summary>
    public TimeSpan? CpuUsed { get; init; }
    /// <summary>CPU use in percent of <see cref="CpuCount"/> cores, when the source measured it itself (a guest kernel).</summary>
    public double? CpuUsedPct { get; init; }
    public long MemoryUsedBytes { get; init; }
    public long MemoryTotalBytes { get; init; }
    public long DiskUsedBytes { get; init; }
    public long DiskTotalBytes { get; init; }
}

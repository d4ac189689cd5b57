using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Live;

namespace Airlock.Sandboxes;

/// <summary>Metering: reserved vCPU and memory time and CPU used while running, GiB-hours of state kept while paused.</summary>
internal sealed class UsageMeter(SandboxContext context)
{
    /// <summary>Usage of a running sandbox brought up to <paramref name="now"/>; moves the CPU meter.</summary>
    public SandboxUsage Running(LiveSandbox live, DateTimeOffset now)
    {
        var usage = live.Record.Usage;
        if (live.Record.State is SandboxState.Paused)
        {
            return usage;
        }

        var since = usage.MeteredAt ?? live.Record.CreatedAt;
        var seconds = Math.Max(0, (now - since).TotalSeconds);
        var cpuDelta = 0.0;
        if (live.Instance.CpuUsed is { } used)
        {
            cpuDelta = Math.Max(0, (used - live.CpuMetered).TotalSeconds);
            live.CpuMetered = used;
        }

        return usage with
        {
            RunningSeconds = usage.RunningSeconds + seconds,
            VCpuSeconds = usage.VCpuSeconds + seconds * live.Record.Limits.VCpus,
            MemoryGiBSeconds = usage.MemoryGiBSeconds + seconds * live.Record.Limits.MemoryMiB / 1024.0,
            CpuSeconds = usage.CpuSeconds + cpuDelta,
            MeteredAt = now,
        };
    }

    /// <summary>Usage of a paused sandbox brought up to <paramref name="now"/>: the GiB it keeps on disk × hours.</summary>
    public SandboxUsage Paused(SandboxRecord record, DateTimeOffset now)
    {
        if (context.Pausable(record.Boundary) is not { } pausable)
        {
            return record.Usage;
        }

        var since = record.Usage.MeteredAt ?? record.PausedAt ?? now;
        var hours = Math.Max(0, (now - since).TotalHours);
        var gib = pausable.PausedBytes(context.Options.StateDir(record.SandboxId)) / (double)(1L << 30);
        return record.Usage with { PausedGiBHours = record.Usage.PausedGiBHours + hours * gib, MeteredAt = now };
    }

    /// <summary>Every sandbox of the tenant (running, paused and ended), metered up to now without moving the meters.</summary>
    public async Task<(DateTimeOffset At, IReadOnlyList<SandboxRecord> Sandboxes)> ReportAsync(string tenantId, CancellationToken cancellationToken)
    {
        var now = context.Now;
        var items = new List<SandboxRecord>();
        foreach (var record in await context.Store.ListSandboxesAsync(tenantId, null, cancellationToken))
        {
            var usage = record.Usage;
            if (context.Registry.TryGet(record.SandboxId, out var live) && !live.Ending && !live.Pausing)
            {
                var cpuBefore = live.CpuMetered;
                usage = Running(live, now);
                live.CpuMetered = cpuBefore; // a read does not move the meter
            }
            else if (record.State == SandboxState.Paused)
            {
                usage = Paused(record, now);
            }

            items.Add(record with { Usage = usage });
        }

        return (now, items);
    }
}

using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes;

/// <summary>
/// The periodic pass: deletes paused sandboxes kept longer than the retention (to disk or frozen in place), audited,
/// and brings every sandbox's usage up to date in the store.
/// </summary>
internal sealed class SandboxReaper(SandboxContext context, SandboxTerminator terminator, UsageMeter meter)
{
    public async Task<IReadOnlyList<string>> ReapAsync(CancellationToken cancellationToken)
    {
        var reaped = new List<string>();
        try
        {
            var now = context.Now;
            foreach (var listed in await context.Store.ListSandboxesAsync(null, [SandboxState.Paused], cancellationToken))
            {
                if (listed.NodeId != context.Options.NodeId || context.Registry.Contains(listed.SandboxId) || context.Pausable(listed.Boundary) is not { } pausable)
                {
                    continue; // another node's, or frozen in place (handled below)
                }

                // Under the paused-sandbox lock, re-read: a resume or kill that got there first wins, and is never overwritten.
                using var _ = await context.Registry.LockPausedAsync(listed.SandboxId, cancellationToken);
                if (await context.Store.GetSandboxAnyTenantAsync(listed.SandboxId, cancellationToken) is not { State: SandboxState.Paused } record)
                {
                    continue;
                }

                var metered = record with { Usage = meter.Paused(record, now) };
                if (record.PausedAt is not { } paused || now - paused < context.Options.PausedRetention)
                {
                    await context.Store.UpdateSandboxAsync(metered, cancellationToken);
                    continue;
                }

                var stateDir = context.Options.StateDir(record.SandboxId);
                var bytes = pausable.PausedBytes(stateDir);
                await context.Drivers[record.Boundary].CleanupAsync(record.SandboxId, stateDir, cancellationToken);
                var ended = metered with { State = SandboxState.Killed, AccessToken = null, EndAt = now, FailureReason = null };
                await context.Store.UpdateSandboxAsync(ended, cancellationToken);
                await context.AuditAsync(AuditKinds.Reaped, ended, AuditJson.Object(
                    ("reason", $"paused for longer than the retention of {context.Options.PausedRetention}"),
                    ("pausedAt", paused), ("bytesFreed", bytes)), cancellationToken);
                reaped.Add(record.SandboxId);
                LifecycleLog.SandboxEnded(context.Logger, record.SandboxId, "reaped after the paused retention");
            }

            foreach (var live in context.Registry.All.ToList())
            {
                if (live.Frozen && !live.Ending && live.Record.PausedAt is { } frozenAt && now - frozenAt >= context.Options.PausedRetention)
                {
                    await terminator.EndAsync(live, SandboxState.Killed, $"paused (frozen) for longer than the retention of {context.Options.PausedRetention}", AuditKinds.Reaped, cancellationToken);
                    reaped.Add(live.Record.SandboxId);
                    continue;
                }

                await live.Gate.WaitAsync(cancellationToken);
                try
                {
                    if (!live.Ending && !live.Pausing && !live.Frozen)
                    {
                        live.Record = live.Record with { Usage = meter.Running(live, now) };
                        await context.Store.UpdateSandboxAsync(live.Record, cancellationToken);
                    }
                }
                finally
                {
                    live.Gate.Release();
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            LifecycleLog.Unexpected(context.Logger, ex, "reaper");
        }

        return reaped;
    }
}

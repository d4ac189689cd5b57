using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Live;

namespace Airlock.Sandboxes;

/// <summary>
/// Ends sandboxes: kill by request, timeout, entry-process exit, shutdown; and deletes what a sandbox leaves (instance,
/// driver state, network, quota).
/// </summary>
/// <remarks>
/// <code>
/// end: mark ending (once) ─ unroute ─ kill instance ─ driver cleanup ─ delete netns ─ meter ─ store(killed|failed) ─ release quota ─ audit
/// </code>
/// </remarks>
internal sealed class SandboxTerminator(SandboxContext context, UsageMeter meter)
{
    public async Task EndAsync(LiveSandbox live, SandboxState state, string reason, string auditKind, CancellationToken cancellationToken)
    {
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            if (live.Ending || !context.Registry.TryGet(live.Record.SandboxId, out var current) || !ReferenceEquals(current, live))
            {
                return; // already ending, or paused to disk meanwhile (a late timeout must not end the paused sandbox)
            }

            live.Ending = true;
            live.TimeoutTimer?.Dispose();
        }
        finally
        {
            live.Gate.Release();
        }

        var id = live.Record.SandboxId;
        context.Connector.Unregister(id);
        await CleanupAsync(id, live.Record.Boundary, live.Instance, live.Record.Network);
        Failpoints.Hit(Failpoints.KillBeforeRecord);
        var now = context.Now;
        live.Record = live.Record with
        {
            Usage = meter.Running(live, now),
            State = state,
            FailureReason = state == SandboxState.Failed ? reason : null,
            AccessToken = null,
            HostPid = null,
            EndAt = now,
        };
        await context.Store.UpdateSandboxAsync(live.Record, CancellationToken.None);
        context.Registry.Remove(id);
        context.Activity.Forget(id);
        live.Reservation.Dispose();
        await context.AuditAsync(auditKind, live.Record, AuditJson.Object(("reason", reason)), CancellationToken.None);
        LifecycleLog.SandboxEnded(context.Logger, id, reason);
    }

    /// <summary>Kills a paused sandbox: nothing runs, so its saved state and disk are deleted (under the paused-sandbox lock).</summary>
    public async Task<bool> KillPausedAsync(string tenantId, string sandboxId, CancellationToken cancellationToken)
    {
        using var _ = await context.Registry.LockPausedAsync(sandboxId, cancellationToken);
        var record = await context.GetAsync(tenantId, sandboxId, cancellationToken);
        if (record.State != SandboxState.Paused || context.Registry.Contains(sandboxId))
        {
            return false;
        }

        var now = context.Now;
        var usage = meter.Paused(record, now);
        await context.Drivers[record.Boundary].CleanupAsync(sandboxId, context.Options.StateDir(sandboxId), cancellationToken);
        record = record with { State = SandboxState.Killed, AccessToken = null, EndAt = now, Usage = usage };
        await context.Store.UpdateSandboxAsync(record, CancellationToken.None);
        await context.AuditAsync(AuditKinds.Kill, record, AuditJson.Object(("reason", "killed by request while paused")), CancellationToken.None);
        return true;
    }

    /// <summary>Best-effort removal of everything a sandbox has on the host; failures are logged, never thrown.</summary>
    public async Task CleanupAsync(string id, BoundaryKind boundary, ISandboxInstance? instance, SandboxNetwork? network)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            if (instance is not null)
            {
                await instance.KillAsync(cts.Token);
                await instance.DisposeAsync();
                Failpoints.Hit(Failpoints.KillAfterStop);
            }

            await context.Drivers[boundary].CleanupAsync(id, context.Options.StateDir(id), cts.Token);
            if (network is not null)
            {
                await context.Network.DeleteAsync(network, cts.Token);
            }
        }
        catch (Exception ex)
        {
            LifecycleLog.CleanupFailed(context.Logger, ex, id);
        }
    }

    public async Task DeleteNetworkAsync(string id, SandboxNetwork network)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await context.Network.DeleteAsync(network, cts.Token);
        }
        catch (Exception ex)
        {
            LifecycleLog.CleanupFailed(context.Logger, ex, id);
        }
    }
}

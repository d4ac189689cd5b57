using System.Diagnostics;
using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Live;

namespace Airlock.Sandboxes;

/// <summary>
/// Pauses running sandboxes. What is kept depends on the boundary and the request, and the audit says which:
/// a microVM its memory, processes and disk (or, without memory, its disk: the resume boots from it); a container
/// frozen in place (memory kept and reserved) or stopped with its files; a process sandbox its files.
/// </summary>
/// <remarks>
/// <code>
/// to disk:  mark pausing ─ store(pausing) ─ driver pause (memory | files) ─ unroute ─ delete netns ─ store(paused) ─ release quota ─ audit
/// in place: cgroup freeze ─ store(paused) ─ audit (network and quota kept)
/// a failed pause leaves the sandbox running (re-armed) or, if it died, failed
/// </code>
/// </remarks>
internal sealed class SandboxPauser(SandboxContext context, SandboxTerminator terminator, UsageMeter meter)
{
    /// <summary>Set by the lifecycle: re-arms a sandbox whose pause failed and that keeps running.</summary>
    public Action<LiveSandbox>? Rearm { get; set; }

    public async Task PauseAsync(string tenantId, string sandboxId, PauseSpec spec, CancellationToken cancellationToken)
    {
        var record = await context.GetAsync(tenantId, sandboxId, cancellationToken);
        if (record.State is SandboxState.Paused or SandboxState.Pausing)
        {
            throw SandboxException.Conflict("sandbox_paused", $"Sandbox {sandboxId} is already {record.State.ToString().ToLowerInvariant()}.");
        }

        // E2B's SDKs before 2.51 send memory: true on every pause: where the boundary keeps only files, the pause keeps
        // its files and says so (audit memoryRequested/memoryKept, the resumed report's startedFrom). Refusing it would
        // leave those SDKs unable to pause a process sandbox at all; keepMemory at create time is refused up front.
        var live = await context.GetLiveAsync(tenantId, sandboxId, cancellationToken);
        var keepMemory = (spec.KeepMemory ?? live.Record.Lifecycle.KeepMemory) && CanKeepMemory(live);
        await PauseLiveAsync(live, spec.KeepMemory == true && !keepMemory ? "requested (memory asked for; this boundary keeps files only)" : "requested", keepMemory, cancellationToken, spec.FreezeInPlace);
    }

    private bool CanKeepMemory(LiveSandbox live) =>
        live.Instance is IFreezableInstance || context.Pausable(live.Record.Boundary) is { CanKeepMemory: true };

    /// <summary>Pauses a live sandbox: frozen in place where memory is to be kept and the instance can freeze, else to disk.</summary>
    public Task PauseLiveAsync(LiveSandbox live, string why, bool keepMemory, CancellationToken cancellationToken, bool freezeInPlace = true)
    {
        if (keepMemory && freezeInPlace && live.Instance is IFreezableInstance && context.Pausable(live.Record.Boundary) is not { CanKeepMemory: true })
        {
            return FreezeAsync(live, why, cancellationToken);
        }

        var pausable = context.Pausable(live.Record.Boundary)
            ?? throw SandboxException.Conflict("pause_unsupported", $"Sandbox {live.Record.SandboxId} runs in the {live.Record.Boundary.Name()} boundary, which cannot pause on this node.");
        return ToDiskAsync(live, pausable, why, keepMemory && pausable.CanKeepMemory, cancellationToken);
    }

    /// <summary>Freezes a container in place: its cgroup's freezer stops every process; memory, network and quota stay.</summary>
    private async Task FreezeAsync(LiveSandbox live, string why, CancellationToken cancellationToken)
    {
        var id = live.Record.SandboxId;
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            if (live.Ending || live.Pausing || live.Frozen)
            {
                throw SandboxException.Conflict("sandbox_busy", $"Sandbox {id} is already pausing, paused or ending.");
            }

            var now = context.Now;
            var usage = meter.Running(live, now);
            await ((IFreezableInstance)live.Instance).FreezeAsync(cancellationToken);
            live.Frozen = true;
            live.TimeoutTimer?.Dispose();
            live.Record = live.Record with { State = SandboxState.Paused, PausedAt = now, Usage = usage with { MeteredAt = now } };
            await context.Store.UpdateSandboxAsync(live.Record, CancellationToken.None);
            const string kept = "memory and processes, frozen in place (memory stays reserved)";
            await context.AuditAsync(AuditKinds.Pause, live.Record, AuditJson.Object(("reason", why), ("kept", kept), ("memoryKept", true)), CancellationToken.None);
            LifecycleLog.SandboxPaused(context.Logger, id, why, kept, 0, 0);
        }
        finally
        {
            live.Gate.Release();
        }
    }

    private async Task ToDiskAsync(LiveSandbox live, IPausableDriver pausable, string why, bool keepMemory, CancellationToken cancellationToken)
    {
        var id = live.Record.SandboxId;
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            if (live.Ending || live.Pausing)
            {
                throw SandboxException.Conflict("sandbox_busy", $"Sandbox {id} is already pausing or ending.");
            }

            live.Pausing = true;
            live.TimeoutTimer?.Dispose();
            live.Record = live.Record with { State = SandboxState.Pausing };
            await context.Store.UpdateSandboxAsync(live.Record, CancellationToken.None);
            Failpoints.Hit(Failpoints.PauseAfterPausing);
            var stopwatch = Stopwatch.StartNew();
            var usage = meter.Running(live, context.Now);
            try
            {
                await pausable.PauseAsync(live.Instance, keepMemory, cancellationToken);
            }
            catch (Exception ex)
            {
                await FailedAsync(live, ex);
                throw ex switch
                {
                    IOException => new SandboxException(SandboxErrorKind.InsufficientStorage, "pause_failed", $"Sandbox {id} could not be paused and keeps running: {ex.Message}", ex),
                    SandboxException or OperationCanceledException => ex,
                    _ => new SandboxException(SandboxErrorKind.Internal, "pause_failed", $"Sandbox {id} could not be paused{(live.Instance.Exited.IsCompleted ? "" : " and keeps running")}: {ex.Message}", ex),
                };
            }

            Failpoints.Hit(Failpoints.PauseAfterDriver);
            context.Connector.Unregister(id);
            await live.Instance.DisposeAsync();
            if (live.Record.Network is { } net)
            {
                await terminator.DeleteNetworkAsync(id, net);
            }

            Failpoints.Hit(Failpoints.PauseBeforePaused);
            var now = context.Now;
            live.Record = live.Record with { State = SandboxState.Paused, PausedAt = now, HostPid = null, Network = null, Usage = usage with { MeteredAt = now } };
            await context.Store.UpdateSandboxAsync(live.Record, CancellationToken.None);
            context.Registry.Remove(id);
            live.Reservation.Dispose(); // nothing runs: a paused sandbox holds disk, not the tenant's CPU and memory
            var bytes = pausable.PausedBytes(context.Options.StateDir(id));
            var kept = keepMemory ? "memory, processes and disk" : "files only; processes were stopped and start afresh on resume";
            await context.AuditAsync(AuditKinds.Pause, live.Record, AuditJson.Object(("reason", why), ("kept", kept), ("memoryKept", keepMemory), ("bytesOnDisk", bytes), ("milliseconds", stopwatch.ElapsedMilliseconds)), CancellationToken.None);
            LifecycleLog.SandboxPaused(context.Logger, id, why, kept, bytes, stopwatch.ElapsedMilliseconds);
        }
        finally
        {
            live.Gate.Release();
        }
    }

    private async Task FailedAsync(LiveSandbox live, Exception ex)
    {
        live.Pausing = false;
        var alive = !live.Instance.Exited.IsCompleted;
        live.Record = live.Record with { State = SandboxState.Running };
        await context.Store.UpdateSandboxAsync(live.Record, CancellationToken.None);
        await context.AuditAsync(AuditKinds.PauseFailed, live.Record, AuditJson.Object(("reason", ex.Message), ("stillRunning", alive)), CancellationToken.None);
        if (live.Record.EndAt > context.Now)
        {
            Rearm?.Invoke(live); // a requested pause: the timeout still lies ahead; at the timeout the supervisor decides
        }
        if (!alive)
        {
            _ = terminator.EndAsync(live, SandboxState.Failed, $"lost while pausing: {ex.Message}", AuditKinds.Failed, CancellationToken.None);
        }
    }
}

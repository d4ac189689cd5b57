using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Live;

namespace Airlock.Sandboxes;

/// <summary>
/// Watches running sandboxes: arms each one's timeout, and turns an entry process that exits on its own into a failed
/// sandbox. At the timeout it does what the sandbox's lifecycle says: kill, or pause (after letting envd requests in
/// flight finish, bounded by the grace), and kill when the pause fails.
/// </summary>
internal sealed class SandboxSupervisor(SandboxContext context, SandboxTerminator terminator, SandboxPauser pauser)
{
    public void Arm(LiveSandbox live)
    {
        live.TimeoutTimer?.Dispose();
        var due = live.Record.EndAt - context.Now;
        if (due < TimeSpan.Zero)
        {
            due = TimeSpan.Zero;
        }

        var id = live.Record.SandboxId;
        live.TimeoutTimer = context.Time.CreateTimer(_ => _ = OnTimeoutAsync(id), null, due, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Arms the timeout and watches the entry process of a sandbox that now runs.</summary>
    public void Supervise(LiveSandbox live)
    {
        Arm(live);
        _ = live.Instance.Exited.ContinueWith(
            async exited =>
            {
                if (live.Ending || live.Pausing || context.Stopping.IsCancellationRequested)
                {
                    return;
                }

                var reason = exited.IsCompletedSuccessfully ? $"entry process exited: {exited.Result}" : "entry process lost";
                try
                {
                    await terminator.EndAsync(live, SandboxState.Failed, reason, AuditKinds.Failed, CancellationToken.None);
                }
                catch (Exception ex)
                {
                    LifecycleLog.Unexpected(context.Logger, ex, "exit watcher");
                }
            },
            CancellationToken.None,
            TaskContinuationOptions.None,
            TaskScheduler.Default);
    }

    /// <summary>What the timeout does; public for tests that drive time by hand.</summary>
    public async Task OnTimeoutAsync(string sandboxId)
    {
        if (!context.Registry.TryGet(sandboxId, out var live) || live.Ending || live.Frozen)
        {
            return; // gone, or frozen in place: the retention, not the timeout, ends it
        }

        try
        {
            if (live.Record.EndAt > context.Now)
            {
                Arm(live); // extended meanwhile
                return;
            }

            if (live.Record.Lifecycle.OnTimeout == TimeoutAction.Pause && await TryPauseAsync(live))
            {
                return;
            }

            await terminator.EndAsync(live, SandboxState.Killed, "timeout", AuditKinds.Timeout, context.Stopping.Token);
        }
        catch (Exception ex)
        {
            LifecycleLog.Unexpected(context.Logger, ex, "timeout");
        }
    }

    private async Task<bool> TryPauseAsync(LiveSandbox live)
    {
        var id = live.Record.SandboxId;
        try
        {
            // A command in flight finishes first (bounded): no new envd request is admitted meanwhile.
            live.Draining = true;
            var inFlight = context.Activity.InFlight(id);
            if (inFlight > 0)
            {
                LifecycleLog.PauseWaits(context.Logger, id, inFlight);
                inFlight = await context.Activity.WaitIdleAsync(id, context.Options.TimeoutPauseGrace, context.Time, context.Stopping.Token);
            }

            if (live.Record.EndAt > context.Now)
            {
                live.Draining = false;
                Arm(live); // extended while it drained
                return true;
            }

            var why = inFlight > 0 ? $"timeout ({inFlight} envd request(s) still in flight after {context.Options.TimeoutPauseGrace.TotalSeconds:0} s were cut)" : "timeout";
            await pauser.PauseLiveAsync(live, why, live.Record.Lifecycle.KeepMemory, context.Stopping.Token);
            live.Draining = false; // a container frozen in place stays registered; it admits traffic again once thawed
            return true;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            live.Draining = false;
            LifecycleLog.Unexpected(context.Logger, ex, "pause at timeout; killing instead");
            return false;
        }
    }
}

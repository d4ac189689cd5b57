using System.Diagnostics;
using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Live;
using Airlock.Sandboxes.Policy;

namespace Airlock.Sandboxes;

/// <summary>
/// Resume and connect: a running sandbox is returned as it is; a frozen container is thawed; a sandbox paused to disk
/// gets its quota back (or a clear refusal), a new network, and is restored by its driver (memory kept) or started
/// afresh on its disk (files only).
/// </summary>
/// <remarks>
/// <code>
/// lock(paused id) ─ running? return ─ frozen? thaw ─ reserve quota ─ store(resuming) ─ netns ─ driver resume ─ identity
///   ─ store(running) ─ discard saved state ─ audit ─ supervise
/// failure: the saved state stays (still paused, can be retried) unless it is gone (failed)
/// </code>
/// </remarks>
internal sealed class SandboxResumer(SandboxContext context, UsageMeter meter, SandboxTerminator terminator, Action<LiveSandbox> supervise, Action<LiveSandbox> rearm)
{
    public async Task<SandboxHandle> ResumeAsync(string tenantId, string sandboxId, ResumeSpec spec, CancellationToken cancellationToken)
    {
        using var _ = await context.Registry.LockPausedAsync(sandboxId, cancellationToken);
        var record = await context.GetAsync(tenantId, sandboxId, cancellationToken);
        if (context.Registry.TryGet(sandboxId, out var live) && !live.Ending)
        {
            if (live.Frozen)
            {
                return await ThawAsync(live, spec, cancellationToken);
            }

            if (!live.Pausing)
            {
                if (spec.TimeoutSeconds is { } extend && (!spec.ExtendOnly || context.Now.AddSeconds(extend) > live.Record.EndAt))
                {
                    await ExtendAsync(live, extend, cancellationToken);
                }

                return new SandboxHandle(live.Record, live.Record.AccessToken ?? "", Resumed: false);
            }
        }

        if (record.State != SandboxState.Paused)
        {
            throw record.State.IsTerminal()
                ? SandboxException.NotFound("sandbox_not_found", $"Sandbox {sandboxId} is {record.State.ToString().ToLowerInvariant()} and cannot be resumed.")
                : SandboxException.Conflict("sandbox_busy", $"Sandbox {sandboxId} is {record.State.ToString().ToLowerInvariant()}; try again.");
        }

        var timeout = context.Policy.Timeout(spec.TimeoutSeconds);
        var pausable = context.Pausable(record.Boundary) ?? throw SandboxException.Conflict("pause_unsupported", $"Sandbox {sandboxId} cannot be resumed by this node.");
        var token = record.AccessToken ?? throw new SandboxException(SandboxErrorKind.Internal, "resume_failed", $"Sandbox {sandboxId}'s access token is missing.");
        var reservation = context.Policy.ReserveForResume(record);
        var stateDir = context.Options.StateDir(sandboxId);
        var withMemory = pausable.PausedWithMemory(stateDir);
        var stopwatch = Stopwatch.StartNew();
        SandboxNetwork? network = null;
        ISandboxInstance? instance = null;
        try
        {
            record = record with { State = SandboxState.Resuming, Usage = meter.Paused(record, context.Now) };
            await context.Store.UpdateSandboxAsync(record, cancellationToken);
            network = await context.Network.CreateAsync(sandboxId, record.NetworkPolicy, cancellationToken);
            Failpoints.Hit(Failpoints.ResumeAfterNetwork);
            var launch = context.Launch(record, token, network);
            instance = await pausable.ResumeAsync(launch, record.Report ?? throw new InvalidOperationException("the paused sandbox has no boundary report"), cancellationToken);
            context.Connector.Register(sandboxId, network);
            // The clock jumped while it slept, and clones must not share the random pool: refresh before use.
            await context.Agent.SetIdentityWhenReadyAsync(sandboxId, instance, instance.BootToken ?? token, token, instance.BootToken is null ? null : record.EnvVars, cancellationToken);
        }
        catch (Exception ex)
        {
            context.Connector.Unregister(sandboxId);
            reservation.Dispose();
            if (instance is not null)
            {
                await instance.DisposeAsync();
            }

            if (network is not null)
            {
                await terminator.DeleteNetworkAsync(sandboxId, network);
            }

            // The saved state is only deleted by a successful resume: the sandbox stays paused and can be tried again.
            var keep = pausable.HasPausedState(stateDir);
            record = keep
                ? record with { State = SandboxState.Paused }
                : record with { State = SandboxState.Failed, FailureReason = $"resume failed: {ex.Message}", AccessToken = null };
            await context.Store.UpdateSandboxAsync(record, CancellationToken.None);
            await context.AuditAsync(AuditKinds.Failed, record, AuditJson.Object(("reason", $"resume failed: {ex.Message}"), ("stillPaused", keep)), CancellationToken.None);
            throw ex is SandboxException or OperationCanceledException
                ? ex
                : new SandboxException(SandboxErrorKind.Internal, "resume_failed", $"Sandbox {sandboxId} could not be resumed{(keep ? " (it stays paused)" : "")}: {ex.Message}", ex);
        }

        Failpoints.Hit(Failpoints.ResumeBeforeRunning);
        var now = context.Now;
        record = record with
        {
            State = SandboxState.Running,
            PausedAt = null,
            Network = network,
            HostPid = instance.HostPid,
            EndAt = now.AddSeconds(timeout),
            Report = record.Report with { StartedFrom = instance.Report.StartedFrom },
            Lifecycle = WithAutoPause(record.Lifecycle, spec.AutoPause),
            Usage = record.Usage with { MeteredAt = now },
        };
        await context.Store.UpdateSandboxAsync(record, CancellationToken.None);
        pausable.DiscardPausedState(stateDir);
        var resumed = new LiveSandbox(record, instance, reservation);
        context.Registry.Add(resumed);
        supervise(resumed);
        await context.AuditAsync(AuditKinds.Resume, record, AuditJson.Object(
            ("milliseconds", stopwatch.ElapsedMilliseconds),
            ("timeoutSeconds", timeout),
            ("memoryKept", withMemory),
            ("startedFrom", instance.Report.StartedFrom)), CancellationToken.None);
        LifecycleLog.SandboxStarted(context.Logger, sandboxId, record.Boundary.Name(), withMemory ? "resumed" : "resumed from its files", stopwatch.ElapsedMilliseconds);
        return new SandboxHandle(record, token, Resumed: true);
    }

    /// <summary>Sets a new timeout from now on a running sandbox.</summary>
    public async Task ExtendAsync(LiveSandbox live, int seconds, CancellationToken cancellationToken)
    {
        var timeout = context.Policy.Timeout(seconds);
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            if (live.Ending)
            {
                throw SandboxException.NotFound("sandbox_not_running", $"Sandbox {live.Record.SandboxId} is not running.");
            }

            live.Record = live.Record with { EndAt = context.Now.AddSeconds(timeout) };
            await context.Store.UpdateSandboxAsync(live.Record, cancellationToken);
            if (!live.Frozen)
            {
                rearm(live);
            }
        }
        finally
        {
            live.Gate.Release();
        }

        await context.AuditAsync(AuditKinds.TimeoutChanged, live.Record, AuditJson.Object(("seconds", timeout), ("endAt", live.Record.EndAt)), cancellationToken);
    }

    private static LifecycleSettings WithAutoPause(LifecycleSettings lifecycle, bool? autoPause) =>
        autoPause is { } auto ? lifecycle with { OnTimeout = auto ? TimeoutAction.Pause : TimeoutAction.Kill } : lifecycle;

    /// <summary>Lets a frozen container run again, with a new timeout; its processes continue where they stopped.</summary>
    private async Task<SandboxHandle> ThawAsync(LiveSandbox live, ResumeSpec spec, CancellationToken cancellationToken)
    {
        var timeout = context.Policy.Timeout(spec.TimeoutSeconds);
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            var stopwatch = Stopwatch.StartNew();
            await ((IFreezableInstance)live.Instance).ThawAsync(cancellationToken);
            live.Frozen = false;
            var now = context.Now;
            live.Record = live.Record with
            {
                State = SandboxState.Running,
                PausedAt = null,
                EndAt = now.AddSeconds(timeout),
                Lifecycle = WithAutoPause(live.Record.Lifecycle, spec.AutoPause),
                Report = live.Record.Report! with { StartedFrom = "thawed: processes and memory kept" },
            };
            await context.Store.UpdateSandboxAsync(live.Record, CancellationToken.None);
            rearm(live);
            await context.AuditAsync(AuditKinds.Resume, live.Record, AuditJson.Object(("milliseconds", stopwatch.ElapsedMilliseconds), ("timeoutSeconds", timeout), ("thawed", true), ("memoryKept", true)), CancellationToken.None);
            return new SandboxHandle(live.Record, live.Record.AccessToken ?? "", Resumed: true);
        }
        finally
        {
            live.Gate.Release();
        }
    }
}

using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Live;

namespace Airlock.Sandboxes;

/// <summary>What startup reconcile does with one stored sandbox that was not ended.</summary>
internal enum ReconcileAction
{
    /// <summary>Its instance survived and answers: it runs on, ours again.</summary>
    Readopt,
    /// <summary>A container frozen in place survived: it stays paused, frozen.</summary>
    ReadoptFrozen,
    /// <summary>Nothing runs but its saved state is complete: it stays (or becomes) paused.</summary>
    KeepPaused,
    /// <summary>Nothing usable is left: cleaned and marked failed.</summary>
    MarkFailed,
}

/// <summary>
/// Startup reconcile: the store against what the host really has. Re-adopts what survived airlockd, keeps what is
/// paused on disk, marks the rest failed, and removes whatever of this data directory's sandboxes is left on the host
/// (processes, cgroups, mounts, namespaces, state directories). Every action is audited.
/// </summary>
internal sealed class SandboxReconciler(SandboxContext context, SandboxTerminator terminator, Action<LiveSandbox> supervise)
{
    private static readonly SandboxState[] Unended = [SandboxState.Creating, SandboxState.Running, SandboxState.Unresponsive, SandboxState.Pausing, SandboxState.Paused, SandboxState.Resuming];

    /// <summary>The decision, apart from the doing (unit-tested).</summary>
    public static ReconcileAction Decide(SandboxRecord record, bool instanceSurvived, bool frozen, bool pausedStateComplete) =>
        (instanceSurvived, frozen) switch
        {
            (true, true) when record.State == SandboxState.Paused => ReconcileAction.ReadoptFrozen,
            (true, _) => ReconcileAction.Readopt,
            _ when record.State is SandboxState.Paused or SandboxState.Pausing or SandboxState.Resuming && pausedStateComplete => ReconcileAction.KeepPaused,
            _ => ReconcileAction.MarkFailed,
        };

    public async Task<IReadOnlyList<string>> ReconcileAsync(CancellationToken cancellationToken)
    {
        var actions = new List<string>();
        var adopted = new HashSet<string>(StringComparer.Ordinal);
        var kept = new HashSet<string>(StringComparer.Ordinal);
        foreach (var stored in await context.Store.ListSandboxesAsync(null, Unended, cancellationToken))
        {
            if (stored.NodeId != context.Options.NodeId)
            {
                continue; // another node's sandbox: its own airlockd reconciles it
            }

            var record = stored;
            var id = record.SandboxId;
            var stateDir = context.Options.StateDir(id);
            var instance = await TryAdoptAsync(record, actions, cancellationToken);
            var action = Decide(record, instance is not null, instance is IFreezableInstance, context.Pausable(record.Boundary)?.HasPausedState(stateDir) == true);
            switch (action)
            {
                case ReconcileAction.ReadoptFrozen:
                    context.Registry.Add(new LiveSandbox(record with { HostPid = instance!.HostPid }, instance, context.Policy.Readopt(record)) { Frozen = true });
                    adopted.Add(id);
                    actions.Add($"sandbox {id}: re-adopted frozen (pid {instance.HostPid})");
                    break;
                case ReconcileAction.Readopt:
                    if (record.State != SandboxState.Running)
                    {
                        // Caught mid-pause or mid-resume with the instance still up: it is running, whatever the store said.
                        record = record with { State = SandboxState.Running, PausedAt = null };
                        await context.Store.UpdateSandboxAsync(record, cancellationToken);
                    }

                    var live = new LiveSandbox(record with { HostPid = instance!.HostPid }, instance, context.Policy.Readopt(record));
                    context.Registry.Add(live);
                    supervise(live);
                    adopted.Add(id);
                    actions.Add($"sandbox {id}: re-adopted (pid {instance.HostPid})");
                    break;
                case ReconcileAction.KeepPaused:
                    if (record.Network is { } stale)
                    {
                        await terminator.DeleteNetworkAsync(id, stale);
                    }

                    await context.Store.UpdateSandboxAsync(record with { State = SandboxState.Paused, PausedAt = record.PausedAt ?? context.Now, Network = null, HostPid = null }, cancellationToken);
                    kept.Add(id);
                    actions.Add($"sandbox {id}: was {record.State.ToString().ToLowerInvariant()}, kept paused");
                    break;
                default:
                    await terminator.CleanupAsync(id, record.Boundary, null, record.Network);
                    var failed = record with { State = SandboxState.Failed, FailureReason = "lost while airlockd was down", AccessToken = null, HostPid = null };
                    await context.Store.UpdateSandboxAsync(failed, cancellationToken);
                    await context.AuditAsync(AuditKinds.Failed, failed, AuditJson.Object(("reason", failed.FailureReason)), cancellationToken);
                    actions.Add($"sandbox {id}: was {record.State.ToString().ToLowerInvariant()}, cleaned and marked failed");
                    break;
            }
        }

        await RemoveLeftoversAsync(adopted, kept, actions, cancellationToken);
        foreach (var action in actions)
        {
            LifecycleLog.Reconciled(context.Logger, action);
        }

        await context.Audit.AppendAsync(new AuditEntry(AuditKinds.Reconcile, null, null, AuditJson.Object(("actions", actions), ("node", context.Options.NodeId))), cancellationToken);
        return actions;
    }

    /// <summary>Takes back a sandbox whose instance outlived airlockd (and whose agent answers), or returns null.</summary>
    private async Task<ISandboxInstance?> TryAdoptAsync(SandboxRecord record, List<string> actions, CancellationToken cancellationToken)
    {
        // Paused with a network: a container frozen in place (a sandbox paused to disk keeps no network).
        if (record.State is not (SandboxState.Running or SandboxState.Unresponsive or SandboxState.Pausing or SandboxState.Resuming or SandboxState.Paused)
            || record.Network is not { } net || record.AccessToken is not { } token || !context.Drivers.TryGetValue(record.Boundary, out var driver))
        {
            return null;
        }

        ISandboxInstance? instance = null;
        try
        {
            instance = await driver.AdoptAsync(record, context.Launch(record, token, net, keepOnShutdown: true), cancellationToken);
            if (instance is null)
            {
                return null;
            }

            context.Connector.Register(record.SandboxId, net);
            if (!(record.State == SandboxState.Paused && instance is IFreezableInstance))
            {
                using var health = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(health.Token, cancellationToken);
                await context.Agent.WaitReadyAsync(record.SandboxId, token, instance, linked.Token);
            }

            return instance;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            actions.Add($"sandbox {record.SandboxId}: could not re-adopt ({ex.Message})");
            context.Connector.Unregister(record.SandboxId);
            if (instance is not null)
            {
                await instance.DisposeAsync();
            }

            return null;
        }
    }

    /// <summary>
    /// Only what belongs to this data directory is ours to clean: ids this store has ever known for this node or that have
    /// a state directory here. Another airlockd on the same host (another data dir, or another node id) keeps its sandboxes.
    /// </summary>
    private async Task RemoveLeftoversAsync(HashSet<string> adopted, HashSet<string> kept, List<string> actions, CancellationToken cancellationToken)
    {
        var ours = new HashSet<string>(StringComparer.Ordinal);
        foreach (var record in await context.Store.ListSandboxesAsync(null, null, cancellationToken))
        {
            if (record.NodeId == context.Options.NodeId)
            {
                ours.Add(record.SandboxId); // a store shared by nodes also knows theirs: those are not ours to clean
            }
        }

        var dir = context.Options.SandboxesDir;
        if (Directory.Exists(dir))
        {
            ours.UnionWith(Directory.EnumerateDirectories(dir).Select(Path.GetFileName).OfType<string>());
        }

        var leftovers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var driver in context.Drivers.Values)
        {
            foreach (var id in await driver.FindLeftoversAsync(cancellationToken))
            {
                if (!ours.Contains(id) || adopted.Contains(id))
                {
                    continue;
                }

                if (kept.Contains(id) && driver is IPausableDriver)
                {
                    // A paused sandbox's VMM caught mid-pause: stop it, keep the state directory.
                    foreach (var line in await driver.CleanupAsync(id, Path.Combine(context.Options.StateDir(id), ".no-state"), cancellationToken))
                    {
                        actions.Add($"paused {id}: {line}");
                    }
                }
                else if (!kept.Contains(id) && leftovers.Add(id))
                {
                    foreach (var line in await driver.CleanupAsync(id, context.Options.StateDir(id), cancellationToken))
                    {
                        actions.Add($"orphan {id}: {line}");
                    }
                }
            }
        }

        foreach (var id in await context.Network.FindLeftoversAsync(cancellationToken))
        {
            if (ours.Contains(id) && !adopted.Contains(id) && !context.Registry.Contains(id))
            {
                await context.Network.DeleteLeftoverAsync(id, cancellationToken);
                actions.Add($"orphan {id}: network namespace and link removed");
            }
        }

        if (Directory.Exists(dir))
        {
            foreach (var stateDir in Directory.EnumerateDirectories(dir))
            {
                var id = Path.GetFileName(stateDir);
                if (!adopted.Contains(id) && !kept.Contains(id) && !context.Registry.Contains(id))
                {
                    foreach (var driver in context.Drivers.Values)
                    {
                        await driver.CleanupAsync(id, stateDir, cancellationToken);
                    }

                    if (Directory.Exists(stateDir))
                    {
                        Directory.Delete(stateDir, recursive: true);
                    }

                    actions.Add($"orphan {id}: state directory removed");
                }
            }
        }
    }
}

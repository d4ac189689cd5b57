using Airlock.Boundaries.Cgroups;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;

namespace Airlock.Boundaries.Container;

/// <summary>
/// The one owner of a running container: the runtime process it was started with (attached mode) or just the
/// container's init pid (detached, or adopted after an airlockd restart), its cgroups and its mounts.
/// </summary>
internal sealed class RuncInstance(
    RuncDriver driver, string sandboxId, string stateDir, BoundaryReport report, System.Diagnostics.Process? process, int pid, CgroupManager cgroups, ILogger logger,
    string? bootToken = null)
    : SandboxInstance(sandboxId, stateDir, report, process, pid, cgroups, logger, poll: TimeSpan.FromMilliseconds(250), bootToken), IFreezableInstance
{
    protected override TimeSpan GracePeriod => TimeSpan.FromMilliseconds(500);

    protected override string EntryName => "the container's init";

    /// <summary>Whether the freezer holds the container (as far as this instance knows).</summary>
    public bool Frozen { get; private set; }

    /// <summary>Stops every process in the container with the freezer (memory stays, nothing runs).</summary>
    public async Task FreezeAsync(CancellationToken cancellationToken)
    {
        if (Frozen)
        {
            return;
        }

        await RunRuntimeAsync("pause", cancellationToken);
        Frozen = true;
    }

    /// <summary>An adopted container the runtime reports as paused.</summary>
    internal void MarkFrozen() => Frozen = true;

    /// <summary>Lets a frozen container run again.</summary>
    public async Task ThawAsync(CancellationToken cancellationToken)
    {
        await RunRuntimeAsync("resume", cancellationToken);
        Frozen = false;
    }

    protected override Task FreezeForPauseAsync(CancellationToken cancellationToken) => FreezeAsync(cancellationToken);

    protected override Task ThawAfterFailedPauseAsync(CancellationToken cancellationToken) => Frozen ? ThawAsync(cancellationToken) : Task.CompletedTask;

    /// <summary>tini passes SIGTERM to the agent, which stops its commands; signals reach frozen tasks only once they run again.</summary>
    protected override async Task SignalStopAsync(CancellationToken cancellationToken)
    {
        if (Frozen)
        {
            await ThawAsync(cancellationToken);
        }

        await HostTools.TryRunAsync(driver.RuntimeBinary, [.. driver.RuntimeArgs(), "kill", SandboxId, "TERM"], cancellationToken);
    }

    /// <summary>delete --force and the cgroup make sure; the layer is detached (its image stays).</summary>
    protected override Task ForceStopAsync(CancellationToken cancellationToken) => driver.StopAsync(SandboxId, StateDir, cancellationToken);

    private async Task RunRuntimeAsync(string command, CancellationToken cancellationToken)
    {
        var result = await HostTools.TryRunAsync(driver.RuntimeBinary, [.. driver.RuntimeArgs(), command, SandboxId], cancellationToken);
        if (result is not { ExitCode: 0 })
        {
            throw new InvalidOperationException($"{driver.RuntimeBinary} {command} failed: {result?.StandardError.Trim()}");
        }
    }
}

using Airlock.Boundaries.Cgroups;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;

namespace Airlock.Boundaries.Process;

/// <summary>
/// The one owner of a running bubblewrap sandbox: its launcher process (or, after an airlockd restart, just its pid),
/// its cgroups and its overlay mount.
/// </summary>
internal sealed class BubblewrapInstance(
    string sandboxId, BoundaryReport report, System.Diagnostics.Process? process, int pid, CgroupManager cgroups, string stateDir, ILogger logger)
    : SandboxInstance(sandboxId, stateDir, report, process, pid, cgroups, logger, poll: TimeSpan.FromMilliseconds(500))
{
    private static readonly Dictionary<int, string> LaunchCodes = new() { [97] = "could not join the sandbox's cgroups" };

    protected override TimeSpan GracePeriod => TimeSpan.FromSeconds(1);

    protected override string EntryName => "the sandbox's entry process";

    protected override IReadOnlyDictionary<int, string> KnownExitCodes => LaunchCodes;

    /// <summary>bwrap passes SIGTERM on; the agent stops its commands.</summary>
    protected override Task SignalStopAsync(CancellationToken cancellationToken)
    {
        if (HostPid is { } pid)
        {
            NativeMethods.kill(pid, 15);
        }

        return Task.CompletedTask;
    }

    /// <summary>The cgroup makes sure; then the overlay and the layer image are detached (the image itself stays).</summary>
    protected override Task ForceStopAsync(CancellationToken cancellationToken) =>
        BubblewrapDriver.StopAsync(Cgroups, Logger, SandboxId, StateDir, cancellationToken);
}

using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Policy;

namespace Airlock.Sandboxes.Live;

/// <summary>A sandbox this node owns right now: its record, the driver's instance, its timeout timer, its quota.</summary>
internal sealed class LiveSandbox(SandboxRecord record, ISandboxInstance instance, QuotaReservation reservation)
{
    /// <summary>Serialises the sandbox's own state changes (pause, timeout change, end).</summary>
    public SemaphoreSlim Gate { get; } = new(1, 1);

    public SandboxRecord Record { get; set; } = record;

    public ISandboxInstance Instance { get; } = instance;

    /// <summary>The tenant quota this sandbox holds while it runs (or is frozen in place); released when it stops.</summary>
    public QuotaReservation Reservation { get; set; } = reservation;

    public ITimer? TimeoutTimer { get; set; }

    /// <summary>Set once a kill or failure has begun, so the exit watcher does not report it as a crash.</summary>
    public bool Ending { get; set; }

    /// <summary>Set while the driver writes the sandbox to disk: its entry process exiting then is the plan, not a crash.</summary>
    public bool Pausing { get; set; }

    /// <summary>
    /// Paused in place (a container under the cgroup freezer): nothing runs, memory stays reserved, the network stays.
    /// The record says paused; envd traffic is refused until a resume thaws it.
    /// </summary>
    public bool Frozen { get; set; }

    /// <summary>CPU time the instance had used when usage was last metered.</summary>
    public TimeSpan CpuMetered { get; set; }

    /// <summary>Set while a timeout pause lets the envd requests in flight finish: no new one is admitted.</summary>
    public bool Draining { get; set; }

    /// <summary>Accepts envd traffic: running, not draining, pausing, frozen or ending.</summary>
    public bool Serving => !Ending && !Pausing && !Frozen && !Draining;
}

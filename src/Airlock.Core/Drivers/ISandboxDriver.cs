using Airlock.Core.Sandboxes;

namespace Airlock.Core.Drivers;

/// <summary>Whether a boundary can be offered on this host, and if not, why.</summary>
public sealed record DriverAvailability(BoundaryKind Boundary, string Driver, bool Available, string Detail)
{
    public IReadOnlyList<string> Missing { get; init; } = [];
}

/// <summary>One isolation mechanism (bubblewrap, runc, qemu). Implementations own the processes they start.</summary>
public interface ISandboxDriver
{
    BoundaryKind Boundary { get; }
    string Name { get; }

    /// <summary>Checks what this host offers; cheap after the first call.</summary>
    Task<DriverAvailability> ProbeAsync(CancellationToken cancellationToken);

    /// <summary>Starts a sandbox; returns once its entry process (the guest agent) is launched.</summary>
    Task<ISandboxInstance> StartAsync(SandboxLaunch launch, CancellationToken cancellationToken);

    /// <summary>Takes ownership of a sandbox left running by an earlier airlockd, or returns null if it is gone.</summary>
    Task<ISandboxInstance?> AdoptAsync(SandboxRecord record, SandboxLaunch launch, CancellationToken cancellationToken);

    /// <summary>Removes whatever this driver left behind for a sandbox id (processes, cgroups, mounts, state).</summary>
    Task<IReadOnlyList<string>> CleanupAsync(string sandboxId, string stateDir, CancellationToken cancellationToken);

    /// <summary>Sandbox ids this driver finds on the host (cgroups, mounts, processes) whether or not the store knows them.</summary>
    Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken);
}

/// <summary>A running sandbox owned by a driver. Disposing it kills everything it started.</summary>
public interface ISandboxInstance : IAsyncDisposable
{
    string SandboxId { get; }
    BoundaryReport Report { get; }
    int? HostPid { get; }
    /// <summary>Completes when the sandbox's entry process exits, with a reason.</summary>
    Task<string> Exited { get; }
    /// <summary>Graceful stop, then kill; frees cgroups and mounts.</summary>
    Task KillAsync(CancellationToken cancellationToken);
    /// <summary>Detaches without killing (airlockd shutting down with keep-on-shutdown).</summary>
    ValueTask DetachAsync();

    /// <summary>
    /// When set, the guest agent still holds this boot token (a snapshot restore, a cold boot or a resume) and airlockd
    /// must hand it the sandbox's identity through SetIdentity before anyone else reaches it.
    /// </summary>
    string? BootToken => null;

    /// <summary>CPU time the sandbox has used so far (its cgroup's accounting), when the driver can tell.</summary>
    TimeSpan? CpuUsed => null;

    /// <summary>
    /// What the sandbox uses now (cgroup CPU and memory, writable-layer disk), or null when the driver cannot tell from
    /// the host (a microVM: its guest reports instead).
    /// </summary>
    ValueTask<ResourceSample?> SampleAsync(CancellationToken cancellationToken) => ValueTask.FromResult<ResourceSample?>(null);
}

/// <summary>A driver that can write a running sandbox to disk and bring it back later (every boundary: what it keeps differs).</summary>
public interface IPausableDriver
{
    /// <summary>Whether a pause can keep memory and processes (a microVM's memory image); otherwise only files are kept.</summary>
    bool CanKeepMemory { get; }

    /// <summary>
    /// Stops the sandbox with its state under its state directory: with <paramref name="keepMemory"/> its memory and
    /// device state too (only where <see cref="CanKeepMemory"/>), else only its files (processes end; the resume boots
    /// or starts fresh on the same disk). Nothing runs and no memory is held afterwards. On failure (a full disk, say)
    /// the sandbox keeps running and the exception says why.
    /// </summary>
    Task PauseAsync(ISandboxInstance instance, bool keepMemory, CancellationToken cancellationToken);

    /// <summary>Whether the paused state in <paramref name="stateDir"/> holds memory (processes come back) or only files.</summary>
    bool PausedWithMemory(string stateDir);

    /// <summary>Restores a paused sandbox from its state directory onto <paramref name="launch"/>'s (new) network.</summary>
    Task<ISandboxInstance> ResumeAsync(SandboxLaunch launch, BoundaryReport report, CancellationToken cancellationToken);

    /// <summary>Deletes the saved state of a sandbox that has been resumed and recorded as running.</summary>
    void DiscardPausedState(string stateDir);

    /// <summary>Whether a paused sandbox's state is complete on disk (a resume can succeed).</summary>
    bool HasPausedState(string stateDir);

    /// <summary>Bytes a paused sandbox keeps on disk (memory image and disk overlay), for metering.</summary>
    long PausedBytes(string stateDir);
}

/// <summary>A running sandbox whose processes can be stopped in place and continued, memory kept (cgroup freezer).</summary>
public interface IFreezableInstance
{
    Task FreezeAsync(CancellationToken cancellationToken);

    Task ThawAsync(CancellationToken cancellationToken);
}

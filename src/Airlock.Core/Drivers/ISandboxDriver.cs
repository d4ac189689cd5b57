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
}

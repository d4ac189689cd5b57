using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries;

/// <summary>
/// Stands in for a boundary this build cannot offer yet, so a request for it fails with the reason instead of
/// silently getting a weaker one.
/// </summary>
public sealed class UnavailableDriver(BoundaryKind boundary, string name, string detail, IReadOnlyList<string> missing) : ISandboxDriver
{
    public BoundaryKind Boundary { get; } = boundary;

    public string Name { get; } = name;

    public Task<DriverAvailability> ProbeAsync(CancellationToken cancellationToken) =>
        Task.FromResult(new DriverAvailability(Boundary, Name, false, detail) { Missing = missing });

    public Task<ISandboxInstance> StartAsync(SandboxLaunch launch, CancellationToken cancellationToken) =>
        throw new InvalidOperationException($"{Boundary.Name()} boundary unavailable: {detail}; missing: {string.Join(", ", missing)}");

    public Task<ISandboxInstance?> AdoptAsync(SandboxRecord record, SandboxLaunch launch, CancellationToken cancellationToken) =>
        Task.FromResult<ISandboxInstance?>(null);

    public Task<IReadOnlyList<string>> CleanupAsync(string sandboxId, string stateDir, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<string>>([]);

    public Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyCollection<string>>([]);
}

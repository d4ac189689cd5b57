using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Policy;

/// <summary>
/// The one place that decides what a sandbox gets: boundary (never weaker than asked without consent), limits, network
/// policy, lifecycle settings, timeout; and that reserves the tenant's quota before anything starts. Later policy
/// (egress allowlists, runtime gates, budgets) plugs in here rather than into the lifecycle's verbs.
/// </summary>
public interface ISandboxPolicy
{
    /// <summary>Decides and reserves; throws <see cref="SandboxException"/> when the spec cannot be admitted.</summary>
    Task<Admission> AdmitAsync(SandboxSpec spec, CancellationToken cancellationToken);

    /// <summary>Reserves the quota a paused sandbox needs to run again; throws when the tenant has no room.</summary>
    QuotaReservation ReserveForResume(SandboxRecord record);

    /// <summary>Records quota held by a sandbox found running at startup (no check: it already runs).</summary>
    QuotaReservation Readopt(SandboxRecord record);

    /// <summary>A timeout in seconds within the operator's bounds (the default when null).</summary>
    int Timeout(int? seconds);
}

/// <summary>What the policy decided for one sandbox. Dispose the reservation if the sandbox never starts.</summary>
public sealed record Admission
{
    public required string TemplateId { get; init; }
    public required BoundaryKind Boundary { get; init; }
    public required Risk Risk { get; init; }
    /// <summary>Set when the caller consented to a weaker boundary and got one: recorded in the report and the audit.</summary>
    public string? Downgrade { get; init; }
    public required SandboxLimits Limits { get; init; }
    public required NetworkPolicy Network { get; init; }
    public required LifecycleSettings Lifecycle { get; init; }
    public required int TimeoutSeconds { get; init; }
    public required IReadOnlyDictionary<string, string> Env { get; init; }
    public required IReadOnlyDictionary<string, string> Metadata { get; init; }
    public required QuotaReservation Reservation { get; init; }
}

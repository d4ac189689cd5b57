using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes;

/// <summary>
/// What a caller asks for when it creates a sandbox, in domain terms: the control API turns its wire DTO (Airlock's or
/// E2B's) into one of these, and the policy seam (<see cref="Policy.ISandboxPolicy"/>) decides what it gets.
/// Nulls mean "not said": the policy fills in the operator's defaults.
/// </summary>
public sealed record SandboxSpec
{
    public required string TenantId { get; init; }
    public string TemplateId { get; init; } = "base";
    public Risk? Risk { get; init; }
    public BoundaryKind? Boundary { get; init; }
    public bool AllowDowngrade { get; init; }
    public int? TimeoutSeconds { get; init; }
    public IReadOnlyDictionary<string, string> Env { get; init; } = new Dictionary<string, string>();
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();
    public int? MemoryMiB { get; init; }
    public int? CpuCount { get; init; }
    public int? DiskMiB { get; init; }
    /// <summary>microvm: boot the kernel instead of restoring the template's snapshot.</summary>
    public bool ColdBoot { get; init; }
    /// <summary>E2B's <c>lifecycle.onTimeout</c> (or the old <c>autoPause</c>); null: kill.</summary>
    public TimeoutAction? OnTimeout { get; init; }
    /// <summary>Whether a pause keeps memory; null: where the boundary can. True where it cannot is refused up front.</summary>
    public bool? KeepMemory { get; init; }
    /// <summary>E2B's <c>lifecycle.autoResume</c>: only with onTimeout pause.</summary>
    public bool? AutoResume { get; init; }
    /// <summary>The caller's network wish; the policy decides (deny-all unless the operator and the egress door allow more).</summary>
    public NetworkPolicy? Network { get; init; }
    /// <summary>E2B's <c>allow_internet_access</c> as sent (the SDKs send true by default); recorded, not granted.</summary>
    public bool? AllowInternetAccess { get; init; }
}

/// <summary>A resume or connect: a new timeout and, optionally, new lifecycle settings.</summary>
public sealed record ResumeSpec
{
    public int? TimeoutSeconds { get; init; }
    /// <summary>Old-style <c>autoPause</c> on resume: true sets onTimeout to pause, false to kill.</summary>
    public bool? AutoPause { get; init; }
    /// <summary>E2B's connect: a running sandbox's timeout is only ever extended, never shortened.</summary>
    public bool ExtendOnly { get; init; }
}

/// <summary>A pause request: keep memory (null: the sandbox's lifecycle setting, true where the boundary can).</summary>
public sealed record PauseSpec
{
    public bool? KeepMemory { get; init; }
    /// <summary>A container's freeze in place (memory kept, reserved) rather than a stop to disk.</summary>
    public bool FreezeInPlace { get; init; } = true;
}

/// <summary>A running sandbox as the caller sees it after create, resume or connect.</summary>
public sealed record SandboxHandle(SandboxRecord Record, string AccessToken, bool Resumed);

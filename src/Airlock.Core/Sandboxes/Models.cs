namespace Airlock.Core.Sandboxes;

/// <summary>Resource limits applied to one sandbox (cgroups for process/container, VM size for microvm).</summary>
public sealed record SandboxLimits
{
    public int MemoryMiB { get; init; } = 512;
    public int Pids { get; init; } = 256;

    /// <summary>
    /// Processes the agent lets the commands it starts have (RLIMIT_NPROC): below <see cref="Pids"/>, so a fork bomb
    /// runs out before the agent does.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int CommandProcesses => Math.Max(Pids / 2, Pids - 48);
    /// <summary>CPU quota in millicores (1000 = one core).</summary>
    public int CpuMillis { get; init; } = 1000;
    public int VCpus { get; init; } = 1;
    /// <summary>
    /// Size of the sandbox's writable disk: the ext4 layer over the template (process, container) or the VM's root disk
    /// (microvm, fixed by the template's disk image).
    /// </summary>
    public int DiskMiB { get; init; } = 4096;
}

/// <summary>What a sandbox really got. Every field is measured or configured, never assumed.</summary>
public sealed record BoundaryReport
{
    public required string Boundary { get; init; }
    public required string Driver { get; init; }
    /// <summary>Runtime or VMM and its version, e.g. "bubblewrap 0.8.0".</summary>
    public string? Runtime { get; init; }
    /// <summary>"kvm" or "tcg" for microvm; null otherwise.</summary>
    public string? Accelerator { get; init; }
    /// <summary>microvm: why this accelerator (e.g. the KVM probe boot that hung).</summary>
    public string? AcceleratorReason { get; init; }
    /// <summary>microvm: the QEMU machine type ("microvm" or "q35").</summary>
    public string? Machine { get; init; }
    /// <summary>microvm: "snapshot", "cold boot" or "resumed from disk".</summary>
    public string? StartedFrom { get; init; }
    /// <summary>Kernel the sandbox's processes see (the host's for process/container).</summary>
    public required string Kernel { get; init; }
    /// <summary>Seccomp profile name and SHA-256 of the compiled filter.</summary>
    public string? Seccomp { get; init; }
    public string? Cgroup { get; init; }
    public bool? UserNamespace { get; init; }
    public required SandboxLimits Limits { get; init; }
    public required string Network { get; init; }
    /// <summary>Set when the caller consented to a weaker boundary than requested and got one.</summary>
    public string? Downgrade { get; init; }
}

/// <summary>The network link Airlock made for a sandbox.</summary>
public sealed record SandboxNetwork
{
    /// <summary>Network namespace name under /run/netns.</summary>
    public required string Namespace { get; init; }
    /// <summary>Host-side veth interface; host connections to the sandbox bind to it (SO_BINDTODEVICE).</summary>
    public required string HostInterface { get; init; }
    public required string HostAddress { get; init; }
    /// <summary>The fixed address every sandbox has inside its namespace.</summary>
    public required string SandboxAddress { get; init; }
    public int Index { get; init; }
}

/// <summary>Everything a driver needs to start one sandbox.</summary>
public sealed record SandboxLaunch
{
    public required string SandboxId { get; init; }
    public required string TemplateId { get; init; }
    /// <summary>Template root filesystem directory (read-only lower layer).</summary>
    public required string RootFs { get; init; }
    /// <summary>Per-sandbox state directory (overlay upper/work, logs, seccomp filter).</summary>
    public required string StateDir { get; init; }
    public required string AccessToken { get; init; }
    public required SandboxLimits Limits { get; init; }
    public required SandboxNetwork Network { get; init; }
    public IReadOnlyDictionary<string, string> EnvVars { get; init; } = new Dictionary<string, string>();
    /// <summary>Path of the guest agent binary on the host.</summary>
    public required string GuestAgentPath { get; init; }
    /// <summary>Whether the sandbox survives airlockd exiting (kept for re-adoption) or dies with it.</summary>
    public bool KeepOnShutdown { get; init; }
    public string Hostname { get; init; } = "sandbox";
    /// <summary>microvm: boot the kernel instead of restoring the template's pre-booted snapshot.</summary>
    public bool ColdBoot { get; init; }
}

/// <summary>A sandbox as stored.</summary>
public sealed record SandboxRecord
{
    public required string SandboxId { get; init; }
    public required string TenantId { get; init; }
    public required string TemplateId { get; init; }
    public required BoundaryKind Boundary { get; init; }
    public required SandboxState State { get; init; }
    public string? FailureReason { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public required DateTimeOffset EndAt { get; init; }
    public required string AccessTokenHash { get; init; }
    /// <summary>The access token, kept only while the sandbox lives so airlockd can reach the agent after a restart.</summary>
    public string? AccessToken { get; init; }
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();
    public IReadOnlyDictionary<string, string> EnvVars { get; init; } = new Dictionary<string, string>();
    public BoundaryReport? Report { get; init; }
    public SandboxNetwork? Network { get; init; }
    public SandboxLimits Limits { get; init; } = new();
    /// <summary>Host PID of the sandbox's supervisor process (bwrap, runc, qemu) when running.</summary>
    public int? HostPid { get; init; }
    /// <summary>What happens at the timeout (kill or pause, keeping memory or not) and whether traffic may resume it.</summary>
    public LifecycleSettings Lifecycle { get; init; } = new();
    /// <summary>The network policy the sandbox was created with (deny-all by default).</summary>
    public NetworkPolicy NetworkPolicy { get; init; } = NetworkPolicy.DenyAll;
    /// <summary>The airlockd node that runs (or keeps the paused state of) this sandbox.</summary>
    public string NodeId { get; init; } = "local";
    /// <summary>When the sandbox was last paused (null unless paused); the reaper deletes it after the retention.</summary>
    public DateTimeOffset? PausedAt { get; init; }
    /// <summary>Metered usage so far (updated on every state change and by the reaper's periodic pass).</summary>
    public SandboxUsage Usage { get; init; } = new();
}

/// <summary>What one sandbox has used: the basis of metering per sandbox and per tenant.</summary>
public sealed record SandboxUsage
{
    /// <summary>Seconds spent running (created or resumed until paused or ended).</summary>
    public double RunningSeconds { get; init; }
    /// <summary>Running seconds × vCPUs reserved.</summary>
    public double VCpuSeconds { get; init; }
    /// <summary>Running seconds × GiB of memory reserved.</summary>
    public double MemoryGiBSeconds { get; init; }
    /// <summary>CPU time actually used (the sandbox's cgroup), summed over every run.</summary>
    public double CpuSeconds { get; init; }
    /// <summary>GiB of paused state kept on disk × hours kept.</summary>
    public double PausedGiBHours { get; init; }
    /// <summary>When the counters above were last brought up to date.</summary>
    public DateTimeOffset? MeteredAt { get; init; }
}

/// <summary>What a sandbox's timeout does.</summary>
public enum TimeoutAction
{
    Kill,
    Pause,
}

/// <summary>A sandbox's lifecycle settings, as E2B's <c>lifecycle</c> object carries them.</summary>
public sealed record LifecycleSettings
{
    public TimeoutAction OnTimeout { get; init; } = TimeoutAction.Kill;
    /// <summary>A pause (at the timeout or requested without saying) keeps memory where the boundary can.</summary>
    public bool KeepMemory { get; init; } = true;
    /// <summary>Traffic to the paused sandbox resumes it (stored and reported; acted on by the ingress door).</summary>
    public bool AutoResume { get; init; }
}

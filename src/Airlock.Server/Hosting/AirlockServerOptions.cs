using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;

namespace Airlock.Server;

/// <summary>airlockd configuration. Validated at startup (<see cref="AirlockServerOptionsValidator"/>).</summary>
public sealed record AirlockServerOptions
{
    /// <summary>Address the control API and envd routes listen on.</summary>
    public string Listen { get; init; } = "http://127.0.0.1:8686";
    public string DataDir { get; init; } = "/var/lib/airlock";
    /// <summary>Domain in sandbox URLs: <c>&lt;port&gt;-&lt;sandboxId&gt;.&lt;domain&gt;</c>.</summary>
    public string Domain { get; init; } = "localhost";
    /// <summary>Keep sandboxes running when airlockd stops (re-adopted on the next start) instead of killing them.</summary>
    public bool KeepSandboxesOnShutdown { get; init; }
    public int DefaultTimeoutSeconds { get; init; } = 300;
    public int MaxTimeoutSeconds { get; init; } = 86_400;
    /// <summary>Risk class used when a request names neither risk nor boundary (E2B SDKs cannot name one).</summary>
    public Risk DefaultRisk { get; init; } = Risk.High;
    public string? GuestAgentPath { get; init; }
    public string? TemplatesDir { get; init; }
    public SandboxLimits DefaultLimits { get; init; } = new();
    public int MaxMemoryMiB { get; init; } = 4096;
    public int MaxCpuCount { get; init; } = 2;
    /// <summary>Largest writable disk a sandbox may ask for.</summary>
    public int MaxDiskMiB { get; init; } = 16_384;
    /// <summary>Boundaries the operator turned off: requests for them fail (or downgrade with consent) as if the host lacked them.</summary>
    public IReadOnlySet<BoundaryKind> DisabledBoundaries { get; init; } = new HashSet<BoundaryKind>();
    /// <summary>Container boundary's OCI runtime: auto (crun where it works on this host, else runc), runc or crun.</summary>
    public string ContainerRuntime { get; init; } = "auto";
    /// <summary>Largest JSON body the control API accepts.</summary>
    public long MaxJsonBodyBytes { get; init; } = 1 << 20;
    /// <summary>Largest file upload through envd routes (streamed to the sandbox, never spooled on the host).</summary>
    public long MaxUploadBytes { get; init; } = 256L << 20;
    /// <summary>File transfers (<c>GET</c>/<c>POST /files</c>) one sandbox may have in flight; more are refused with 429 and Retry-After.</summary>
    public int MaxFileTransfersPerSandbox { get; init; } = 4;
    public int MaxSandboxesPerTenant { get; init; } = 50;
    /// <summary>Memory all of a tenant's running sandboxes may reserve together.</summary>
    public int MaxTenantMemoryMiB { get; init; } = 16_384;
    /// <summary>vCPUs all of a tenant's running sandboxes may reserve together.</summary>
    public int MaxTenantVCpus { get; init; } = 8;
    /// <summary>How long a paused sandbox is kept before the reaper deletes it (E2B keeps them for days; at least 8 hours here).</summary>
    public TimeSpan PausedRetention { get; init; } = TimeSpan.FromHours(8);
    /// <summary>How often the reaper deletes expired paused sandboxes and brings usage counters up to date.</summary>
    public TimeSpan ReaperInterval { get; init; } = TimeSpan.FromMinutes(1);
    /// <summary>microvm accelerator: auto (KVM after a successful probe boot, else TCG), kvm or tcg.</summary>
    public string Accelerator { get; init; } = "auto";
    /// <summary>Start microVMs from a per-template pre-booted snapshot (false: every one boots its kernel).</summary>
    public bool MicroVmSnapshots { get; init; } = true;
    /// <summary>microvm images and snapshots (default: $AIRLOCK_VM_CACHE_DIR, else &lt;data-dir&gt;/vm); shareable between airlockd processes.</summary>
    public string? VmCacheDir { get; init; }

    /// <summary>This node's name in every sandbox record it runs (several nodes share one store).</summary>
    public string NodeId { get; init; } = "local";

    /// <summary>How long a timeout pause waits for envd requests in flight (a running command) to finish first.</summary>
    public TimeSpan TimeoutPauseGrace { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How often every running sandbox's guest agent is health-checked (<see cref="TimeSpan.Zero"/>: never).</summary>
    public TimeSpan HealthInterval { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>How long one health check waits for the agent.</summary>
    public TimeSpan HealthTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Consecutive missed health checks after which a sandbox is listed <c>unresponsive</c>.</summary>
    public int HealthMisses { get; init; } = 3;

    /// <summary>Least level of airlockd's own log (its lifecycle, drivers, network); framework categories log warnings and up unless this is debug or trace.</summary>
    public LogLevel LogLevel { get; init; } = LogLevel.Information;
    /// <summary>
    /// Least level of request lines (category <c>Airlock.Server.Requests</c>): a request is logged at information when it
    /// succeeds, warning when it is a 4xx or slower than <see cref="SlowRequest"/>, error when a 5xx. The default logs only
    /// the last two; information logs every request.
    /// </summary>
    public LogLevel RequestLogLevel { get; init; } = LogLevel.Warning;
    /// <summary>A control-API request slower than this is logged at warning (envd streams such as a running command are not timed).</summary>
    public TimeSpan SlowRequest { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Log output on stdout: text (one line each), json (one JSON object per line, for collectors) or systemd (syslog priority prefixes for journald).</summary>
    public string LogFormat { get; init; } = "text";

    /// <summary>The lifecycle's part of this configuration.</summary>
    public Airlock.Sandboxes.SandboxOptions ToSandboxOptions() => new()
    {
        DataDir = DataDir,
        NodeId = NodeId,
        Domain = Domain,
        KeepSandboxesOnShutdown = KeepSandboxesOnShutdown,
        DefaultTimeoutSeconds = DefaultTimeoutSeconds,
        MaxTimeoutSeconds = MaxTimeoutSeconds,
        DefaultRisk = DefaultRisk,
        DefaultLimits = DefaultLimits,
        MaxMemoryMiB = MaxMemoryMiB,
        MaxCpuCount = MaxCpuCount,
        MaxDiskMiB = MaxDiskMiB,
        MaxSandboxesPerTenant = MaxSandboxesPerTenant,
        MaxTenantMemoryMiB = MaxTenantMemoryMiB,
        MaxTenantVCpus = MaxTenantVCpus,
        PausedRetention = PausedRetention,
        ReaperInterval = ReaperInterval,
        TimeoutPauseGrace = TimeoutPauseGrace,
        HealthInterval = HealthInterval,
        HealthTimeout = HealthTimeout,
        HealthMisses = HealthMisses,
    };
}

using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;

namespace Airlock.Sandboxes.Policy;

/// <summary>
/// The operator's rules as configured: risk → boundary (design.md §1; a weaker one only with consent, recorded),
/// limits within bounds, deny-all egress, lifecycle settings the boundary can honour, and the tenant quota.
/// </summary>
internal sealed class DefaultSandboxPolicy(
    IReadOnlyDictionary<BoundaryKind, ISandboxDriver> drivers,
    ITemplateSource templates,
    QuotaLedger quota,
    SandboxOptions options,
    ILogger<DefaultSandboxPolicy> logger) : ISandboxPolicy
{
    public async Task<Admission> AdmitAsync(SandboxSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var templateId = string.IsNullOrWhiteSpace(spec.TemplateId) ? "base" : spec.TemplateId.Trim();
        if (!templates.IsKnown(templateId, out var known))
        {
            throw SandboxException.NotFound("template_not_found", $"Template '{templateId}' not found. Known templates: {string.Join(", ", known)}.");
        }

        var timeout = Timeout(spec.TimeoutSeconds);
        var env = SandboxInputs.Env(spec.Env);
        var metadata = SandboxInputs.Metadata(spec.Metadata);
        var limits = Limits(spec);
        var network = spec.Network ?? NetworkPolicy.DenyAll;
        if (!network.IsDenyAll)
        {
            throw new SandboxException(SandboxErrorKind.Unavailable, "egress_unavailable", "This airlockd enforces only the deny-all egress policy; egress allowlists need the egress proxy, which is not part of this version.");
        }

        var (boundary, risk, downgrade) = await ChooseBoundaryAsync(spec, cancellationToken);
        if (boundary == BoundaryKind.MicroVm && spec.DiskMiB is { } asked && asked != options.DefaultLimits.DiskMiB)
        {
            throw SandboxException.Invalid("invalid_disk", $"microvm sandboxes get the template's {options.DefaultLimits.DiskMiB} MiB root disk; diskMB applies to the process and container boundaries.");
        }

        var lifecycle = Lifecycle(spec, boundary);
        var reservation = quota.Reserve(spec.TenantId, "", limits);
        return new Admission
        {
            TemplateId = templateId,
            Boundary = boundary,
            Risk = risk,
            Downgrade = downgrade,
            Limits = limits,
            Network = network,
            Lifecycle = lifecycle,
            TimeoutSeconds = timeout,
            Env = env,
            Metadata = metadata,
            Reservation = reservation,
        };
    }

    public QuotaReservation ReserveForResume(SandboxRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        return quota.Reserve(record.TenantId, record.SandboxId, record.Limits);
    }

    public QuotaReservation Readopt(SandboxRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        return quota.Reserve(record.TenantId, record.SandboxId, record.Limits, force: true);
    }

    public int Timeout(int? seconds)
    {
        var value = seconds ?? options.DefaultTimeoutSeconds;
        return value <= 0 || value > options.MaxTimeoutSeconds
            ? throw SandboxException.Invalid("invalid_timeout", $"timeout must be between 1 and {options.MaxTimeoutSeconds} seconds, got {value}.")
            : value;
    }

    /// <summary>Whether a pause of this boundary can keep memory: a microVM's memory image, a container frozen in place.</summary>
    private bool CanKeepMemory(BoundaryKind boundary) =>
        boundary == BoundaryKind.Container || drivers.GetValueOrDefault(boundary) is IPausableDriver { CanKeepMemory: true };

    private bool CanPause(BoundaryKind boundary) =>
        boundary == BoundaryKind.Container || drivers.GetValueOrDefault(boundary) is IPausableDriver;

    private LifecycleSettings Lifecycle(SandboxSpec spec, BoundaryKind boundary)
    {
        var onTimeout = spec.OnTimeout ?? TimeoutAction.Kill;
        if (spec.AutoResume == true && onTimeout != TimeoutAction.Pause)
        {
            throw SandboxException.Invalid("invalid_lifecycle", "lifecycle.autoResume needs lifecycle.onTimeout 'pause' (a killed sandbox cannot be resumed).");
        }

        if (onTimeout == TimeoutAction.Pause && !CanPause(boundary))
        {
            throw new SandboxException(SandboxErrorKind.Unavailable, "pause_unsupported", $"onTimeout 'pause' needs a boundary that can pause; this sandbox would get {boundary.Name()}, which cannot here.");
        }

        if (spec.KeepMemory == true && !CanKeepMemory(boundary))
        {
            throw new SandboxException(SandboxErrorKind.Unavailable, "memory_not_kept", $"The {boundary.Name()} boundary cannot keep memory across a pause (only its files); ask without keepMemory or for a microvm.");
        }

        return new LifecycleSettings
        {
            OnTimeout = onTimeout,
            KeepMemory = spec.KeepMemory ?? CanKeepMemory(boundary),
            AutoResume = spec.AutoResume == true,
        };
    }

    private SandboxLimits Limits(SandboxSpec spec)
    {
        var limits = options.DefaultLimits;
        if (spec.MemoryMiB is { } memory)
        {
            limits = memory < 64 || memory > options.MaxMemoryMiB
                ? throw SandboxException.Invalid("invalid_memory", $"memoryMB must be between 64 and {options.MaxMemoryMiB}, got {memory}.")
                : limits with { MemoryMiB = memory };
        }

        if (spec.CpuCount is { } cpus)
        {
            limits = cpus < 1 || cpus > options.MaxCpuCount
                ? throw SandboxException.Invalid("invalid_cpu_count", $"cpuCount must be between 1 and {options.MaxCpuCount}, got {cpus}.")
                : limits with { CpuMillis = cpus * 1000, VCpus = cpus };
        }

        if (spec.DiskMiB is { } disk)
        {
            limits = disk < 64 || disk > options.MaxDiskMiB
                ? throw SandboxException.Invalid("invalid_disk", $"diskMB must be between 64 and {options.MaxDiskMiB}, got {disk}.")
                : limits with { DiskMiB = disk };
        }

        return limits;
    }

    private async Task<(BoundaryKind Boundary, Risk Risk, string? Downgrade)> ChooseBoundaryAsync(SandboxSpec spec, CancellationToken cancellationToken)
    {
        var risk = spec.Risk ?? options.DefaultRisk;
        var required = BoundaryMapping.ForRisk(risk);
        var target = required;
        if (spec.Boundary is { } named)
        {
            target = named;
            if (spec.Risk is null && target < required)
            {
                required = target; // naming a boundary without a risk class asks for exactly that boundary
            }

            if (target < required && !spec.AllowDowngrade)
            {
                throw SandboxException.Invalid("boundary_too_weak", $"risk '{risk.ToString().ToLowerInvariant()}' requires the {required.Name()} boundary; {target.Name()} is weaker. Set allowDowngrade to consent.");
            }
        }

        var availability = drivers.TryGetValue(target, out var driver)
            ? await driver.ProbeAsync(cancellationToken)
            : new DriverAvailability(target, "none", false, "no driver is configured for it");
        if (availability.Available)
        {
            return (target, risk, target < required ? $"requested {required.Name()}, caller consented to {target.Name()}" : null);
        }

        LifecycleLog.BoundaryUnavailable(logger, target.Name(), availability.Detail);
        if (spec.AllowDowngrade)
        {
            for (var weaker = target - 1; weaker >= BoundaryKind.Process; weaker--)
            {
                if (drivers.TryGetValue(weaker, out var fallback) && (await fallback.ProbeAsync(cancellationToken)).Available)
                {
                    return (weaker, risk, $"{target.Name()} unavailable ({availability.Detail}); caller allowed downgrade to {weaker.Name()}");
                }
            }
        }

        var missing = availability.Missing.Count > 0 ? $" Missing: {string.Join("; ", availability.Missing)}." : "";
        throw new SandboxException(SandboxErrorKind.Unavailable, "boundary_unavailable", $"The {target.Name()} boundary is not available on this host: {availability.Detail}.{missing} Airlock never picks a weaker boundary silently; ask for a weaker risk class or set allowDowngrade.");
    }
}

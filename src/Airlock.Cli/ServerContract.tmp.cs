#if AIRLOCK_SERVER_STUB
// Temporary stand-in for src/Airlock.Server's hosting API, compiled only with -p:DefineConstants=AIRLOCK_SERVER_STUB
// while Airlock.Server does not build. Delete once it does.
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Server;

public sealed record AirlockServerOptions
{
    public string Listen { get; init; } = "http://127.0.0.1:8686";
    public string DataDir { get; init; } = "/var/lib/airlock";
    public string Domain { get; init; } = "localhost";
    public bool KeepSandboxesOnShutdown { get; init; }
    public int DefaultTimeoutSeconds { get; init; } = 300;
    public Risk DefaultRisk { get; init; } = Risk.High;
    public string? GuestAgentPath { get; init; }
    public string? TemplatesDir { get; init; }
}

public static class AirlockServer
{
    public static Task<int> RunAsync(AirlockServerOptions options, Action<string>? onBootstrapKey, CancellationToken cancellationToken) =>
        throw new NotSupportedException("built with AIRLOCK_SERVER_STUB");

    public static Task<IReadOnlyList<DriverAvailability>> DoctorAsync(AirlockServerOptions options, CancellationToken cancellationToken) =>
        throw new NotSupportedException("built with AIRLOCK_SERVER_STUB");
}
#endif

using Microsoft.Extensions.Options;

namespace Airlock.Server;

internal sealed class AirlockServerOptionsValidator : IValidateOptions<AirlockServerOptions>
{
    public ValidateOptionsResult Validate(string? name, AirlockServerOptions options)
    {
        var failures = new List<string>();
        if (!Uri.TryCreate(options.Listen, UriKind.Absolute, out var listen) || listen.Scheme is not ("http" or "https"))
        {
            failures.Add($"Listen must be an http(s) URL, got '{options.Listen}'.");
        }

        if (string.IsNullOrWhiteSpace(options.DataDir) || !Path.IsPathRooted(options.DataDir))
        {
            failures.Add($"DataDir must be an absolute path, got '{options.DataDir}'.");
        }

        if (options.DefaultTimeoutSeconds <= 0 || options.DefaultTimeoutSeconds > options.MaxTimeoutSeconds)
        {
            failures.Add($"DefaultTimeoutSeconds must be in 1..{options.MaxTimeoutSeconds}.");
        }

        if (string.IsNullOrWhiteSpace(options.Domain) || options.Domain.Contains('/', StringComparison.Ordinal))
        {
            failures.Add("Domain must be a host name.");
        }

        if (options.GuestAgentPath is { } agent && !File.Exists(agent))
        {
            failures.Add($"GuestAgentPath '{agent}' does not exist (build it: dotnet publish src/Airlock.Guest -c Release -r linux-x64 -o artifacts/guest).");
        }

        if (options.ContainerRuntime is not ("auto" or "runc" or "crun"))
        {
            failures.Add($"ContainerRuntime must be auto, runc or crun, got '{options.ContainerRuntime}'.");
        }

        if (options.DefaultLimits.DiskMiB < 64 || options.DefaultLimits.DiskMiB > options.MaxDiskMiB)
        {
            failures.Add($"DefaultLimits.DiskMiB must be in 64..{options.MaxDiskMiB}.");
        }

        if (options.MaxUploadBytes <= 0)
        {
            failures.Add("MaxUploadBytes must be positive.");
        }

        if (options.MaxFileTransfersPerSandbox is < 1 or > 1024)
        {
            failures.Add($"MaxFileTransfersPerSandbox must be in 1..1024, got {options.MaxFileTransfersPerSandbox}.");
        }

        if (options.HealthInterval < TimeSpan.Zero || options.HealthTimeout <= TimeSpan.Zero || options.HealthMisses < 1)
        {
            failures.Add("HealthInterval must be zero (off) or positive, HealthTimeout positive and HealthMisses at least 1.");
        }

        if (options.LogLevel == Microsoft.Extensions.Logging.LogLevel.None || !Enum.IsDefined(options.LogLevel)
            || !Enum.IsDefined(options.RequestLogLevel))
        {
            failures.Add("LogLevel must be trace, debug, information, warning, error or critical; RequestLogLevel the same or none.");
        }

        if (options.SlowRequest <= TimeSpan.Zero)
        {
            failures.Add("SlowRequest must be positive.");
        }

        if (options.LogFormat is not ("text" or "json" or "systemd"))
        {
            failures.Add($"LogFormat must be text, json or systemd, got '{options.LogFormat}'.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

using System.Security.Cryptography;
using System.Text;
using CliWrap;
using CliWrap.Buffered;
using Microsoft.Extensions.Logging;

namespace Airlock.Templates;

/// <summary>
/// Builds the <c>base</c> root filesystem (Debian bookworm, minbase) with mmdebstrap from Debian packages, once:
/// <c>&lt;templates&gt;/base/rootfs</c>, completed by <c>&lt;templates&gt;/base/.complete</c> holding the inputs hash.
/// Concurrent builders (airlockd, tests, other processes) serialise on an exclusive lock on <c>base/.lock</c>.
/// </summary>
public sealed partial class BaseTemplateBuilder(string templatesDir, ILogger<BaseTemplateBuilder> logger)
{
    /// <summary>Bumped whenever the customisation below changes, so caches rebuild.</summary>
    private const string BuilderVersion = "airlock-base-3";
    private const string Suite = "bookworm";

    /// <summary>Packages on top of minbase. The rootfs has no network, so nothing here fetches at run time.</summary>
    public static readonly IReadOnlyList<string> Packages = ["bash", "coreutils", "procps", "python3", "ca-certificates", "less", "findutils", "grep", "sed", "tar", "gzip"];

    public string TemplatesDir { get; } = templatesDir;

    public string BaseDir => Path.Combine(TemplatesDir, TemplateCatalog.BaseTemplateId);

    public string RootFs => Path.Combine(BaseDir, "rootfs");

    public string CompleteMarker => Path.Combine(BaseDir, ".complete");

    /// <summary>The hash recorded in the marker; a different value means the cache is stale.</summary>
    public static string InputsHash { get; } = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
        string.Join('\n', [BuilderVersion, Suite, .. Packages]))));

    /// <summary>True when the rootfs is built from the current inputs.</summary>
    public bool IsCurrent() =>
        Directory.Exists(RootFs) && File.Exists(CompleteMarker) && string.Equals(File.ReadAllText(CompleteMarker).Trim(), InputsHash, StringComparison.Ordinal);

    /// <summary>Returns the rootfs path, building it first if missing or stale.</summary>
    public async Task<string> EnsureBuiltAsync(IProgress<string>? progress, CancellationToken cancellationToken)
    {
        if (IsCurrent())
        {
            return RootFs;
        }

        Directory.CreateDirectory(BaseDir);
        await using var held = await AcquireLockAsync(progress, cancellationToken);
        if (IsCurrent())
        {
            return RootFs;
        }

        await BuildAsync(progress, cancellationToken);
        return RootFs;
    }

    private async Task<FileStream> AcquireLockAsync(IProgress<string>? progress, CancellationToken cancellationToken)
    {
        var path = Path.Combine(BaseDir, ".lock");
        var reported = false;
        while (true)
        {
            try
            {
                // FileShare.None is an flock(LOCK_EX) on Linux: held across processes, released if the holder dies.
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException)
            {
                if (!reported)
                {
                    progress?.Report("another process is building the base template; waiting for it");
                    reported = true;
                }

                await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken);
            }
        }
    }

    private async Task BuildAsync(IProgress<string>? progress, CancellationToken cancellationToken)
    {
        var mmdebstrap = FindOnPath("mmdebstrap")
            ?? throw new TemplateBuildException("mmdebstrap is not installed; it builds the base template from Debian packages: apt-get install mmdebstrap");
        var sources = File.Exists("/etc/apt/sources.list.d/debian.sources") ? "/etc/apt/sources.list.d/debian.sources" : "http://deb.debian.org/debian";
        var staging = Path.Combine(BaseDir, "rootfs.building-" + Environment.ProcessId);
        DeleteTree(staging);
        LogBuilding(logger, RootFs, sources);
        progress?.Report($"building the base template (Debian {Suite}) with mmdebstrap into {RootFs}; this takes a minute");
        var started = System.Diagnostics.Stopwatch.StartNew();
        var log = new StringBuilder();
        var result = await Cli.Wrap(mmdebstrap)
            .WithArguments(
            [
                "--variant=minbase",
                "--mode=root",
                "--format=directory",
                "--include=" + string.Join(',', Packages),
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--customize-hook=chroot \"$1\" useradd --create-home --uid 1000 --user-group --shell /bin/bash user",
                "--customize-hook=echo sandbox > \"$1/etc/hostname\"",
                "--customize-hook=printf '127.0.0.1 localhost\\n::1 localhost\\n127.0.1.1 sandbox\\n' > \"$1/etc/hosts\"",
                "--customize-hook=rm -rf \"$1\"/var/cache/apt/* \"$1\"/var/lib/apt/lists/*",
                "--customize-hook=mkdir -p \"$1/.airlock/bin\"",
                Suite,
                staging,
                sources,
            ])
            .WithValidation(CommandResultValidation.None)
            .WithStandardOutputPipe(PipeTarget.ToDelegate(line => Append(log, line, progress)))
            .WithStandardErrorPipe(PipeTarget.ToDelegate(line => Append(log, line, progress)))
            .ExecuteAsync(cancellationToken);
        if (result.ExitCode != 0)
        {
            DeleteTree(staging);
            throw new TemplateBuildException($"mmdebstrap failed with exit code {result.ExitCode} building the base template; last output:\n{Tail(log.ToString(), 30)}");
        }

        File.Delete(CompleteMarker);
        var old = RootFs + ".old-" + Environment.ProcessId;
        if (Directory.Exists(RootFs))
        {
            Directory.Move(RootFs, old);
        }

        Directory.Move(staging, RootFs);
        DeleteTree(old);
        await File.WriteAllTextAsync(CompleteMarker, InputsHash + "\n", cancellationToken);
        LogBuilt(logger, RootFs, started.Elapsed.TotalSeconds);
        progress?.Report($"base template built in {started.Elapsed.TotalSeconds:F0} s");
    }

    private static void Append(StringBuilder log, string line, IProgress<string>? progress)
    {
        lock (log)
        {
            log.AppendLine(line);
        }

        if (line.StartsWith("I: ", StringComparison.Ordinal))
        {
            progress?.Report(line[3..]);
        }
    }

    private static string Tail(string text, int lines)
    {
        var all = text.Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }

    private static void DeleteTree(string path)
    {
        if (Directory.Exists(path))
        {
            // rm handles device nodes and read-only dirs that Directory.Delete trips on; the path is ours.
            Cli.Wrap("rm").WithArguments(["-rf", "--one-file-system", "--", path]).WithValidation(CommandResultValidation.None)
                .ExecuteBufferedAsync().GetAwaiter().GetResult();
        }
    }

    internal static string? FindOnPath(string name)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        foreach (var dir in path.Split(':', StringSplitOptions.RemoveEmptyEntries).Concat(["/usr/sbin", "/usr/bin", "/sbin", "/bin"]))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Building the base template into {RootFs} from {Sources}")]
    private static partial void LogBuilding(ILogger logger, string rootFs, string sources);

    [LoggerMessage(Level = LogLevel.Information, Message = "Base template ready at {RootFs} in {Seconds:F1} s")]
    private static partial void LogBuilt(ILogger logger, string rootFs, double seconds);
}

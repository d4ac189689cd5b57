using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries.Layers;

/// <summary>
/// Pause to disk for the boundaries on the host kernel (process, container): the processes end, the writable layer
/// (<c>layer.img</c>) and the path of the template below it stay, and a resume starts the sandbox afresh on them. No
/// memory is kept (CRIU does not work on these hosts); freezing in place is <see cref="IFreezableInstance"/>.
/// </summary>
/// <remarks>
/// <code>
/// pause:  refuse keepMemory ─ freeze (nothing writes) ─ stop without a signal ─ unmount ─ "paused" marker
/// resume: the driver's start on the kept layer.img and template, ids shifted to the new slot, new processes
/// </code>
/// </remarks>
internal static class FilesOnlyPause
{
    /// <summary>What a resumed sandbox's report says it started from.</summary>
    public const string ResumedFrom = "resumed from disk: files kept, processes were stopped at pause and started afresh";

    private const string Marker = "paused";
    private const string TemplateFile = "template";

    /// <summary>Stops <paramref name="instance"/> with its files kept; on failure it keeps running and the exception says why.</summary>
    public static async Task PauseAsync(ISandboxInstance instance, bool keepMemory, CancellationToken cancellationToken)
    {
        var sandbox = instance as SandboxInstance ?? throw new ArgumentException($"{instance.GetType().Name} is not a sandbox of this driver", nameof(instance));
        if (keepMemory)
        {
            throw new NotSupportedException(
                $"the {sandbox.Report.Boundary} boundary cannot keep memory across a pause (no CRIU on this host): pause keeps its files only, and freezing in place keeps its memory");
        }

        await sandbox.PauseToDiskAsync(cancellationToken);
        await File.WriteAllTextAsync(Path.Combine(sandbox.StateDir, Marker), "processes stopped; filesystem kept", cancellationToken);
    }

    /// <summary>
    /// The template root the sandbox's layer sits on: the launch's at a start (remembered in the state directory), the
    /// remembered one at a resume (the layer's lower directory must not change under it).
    /// </summary>
    public static async Task<string> TemplateRootAsync(SandboxLaunch launch, bool resumed, CancellationToken cancellationToken)
    {
        var file = Path.Combine(launch.StateDir, TemplateFile);
        var root = resumed ? (await File.ReadAllTextAsync(file, cancellationToken)).Trim() : launch.RootFs;
        HostTools.ValidatePath(root, "template root filesystem");
        await File.WriteAllTextAsync(file, root, cancellationToken);
        return root;
    }

    /// <summary>
    /// The layer image and the template it sits on are all such a sandbox needs to come back (its processes never do):
    /// so one lost while frozen (a host reboot) or mid-pause is still resumable from its files.
    /// </summary>
    public static bool HasPausedState(string stateDir) =>
        File.Exists(Path.Combine(stateDir, WritableLayer.Image)) && File.Exists(Path.Combine(stateDir, TemplateFile));

    public static void Discard(string stateDir) => File.Delete(Path.Combine(stateDir, Marker));

    public static long PausedBytes(string stateDir) => WritableLayer.AllocatedBytes(stateDir);
}

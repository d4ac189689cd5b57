using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.Boundaries.Layers;

/// <summary>
/// A sandbox's root filesystem: the template read-only below, and above it a writable layer that lives in an ext4
/// image of its own (<c>layer.img</c>), so the sandbox's disk quota is the size of that filesystem and a full disk
/// fills only the sandbox's image. For user-namespaced sandboxes the template is seen through an idmapped mount, so
/// root in the sandbox owns the template's root-owned files without a copy or a chown of the template.
/// </summary>
/// <remarks>
/// <code>
/// stateDir/layer.img ──loop──▶ stateDir/layer/{upper,work}   (the quota: ENOSPC at the image's size)
/// template rootfs ──idmap──▶ stateDir/lower                   (host uid 0 seen as idBase)
/// overlay(lower, layer/upper) ──▶ stateDir/merged              (the sandbox's /)
/// </code>
/// </remarks>
internal static class WritableLayer
{
    public const string Image = "layer.img";

    public static string LayerDir(string stateDir) => Path.Combine(stateDir, "layer");

    public static string Upper(string stateDir) => Path.Combine(stateDir, "layer", "upper");

    public static string Lower(string stateDir) => Path.Combine(stateDir, "lower");

    public static string Merged(string stateDir) => Path.Combine(stateDir, "merged");

    /// <summary>Creates the layer's filesystem (sparse: only written blocks take host disk) unless it exists.</summary>
    public static async Task CreateImageAsync(string stateDir, int sizeMiB, CancellationToken cancellationToken)
    {
        var image = Path.Combine(stateDir, Image);
        if (File.Exists(image))
        {
            return;
        }

        var building = image + ".new";
        await using (var file = new FileStream(building, FileMode.Create, FileAccess.Write))
        {
            file.SetLength((long)sizeMiB * 1024 * 1024);
        }

        UnixFiles.SetMode(building, UnixFileMode.UserRead | UnixFileMode.UserWrite); // the sandbox's files: root's alone on the host

        // No reserved blocks (the sandbox gets the whole quota), lazy init (sparse stays sparse).
        var mkfs = await Cli.Wrap("mkfs.ext4")
            .WithArguments(["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-L", "airlock-layer", building])
            .WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(cancellationToken);
        if (mkfs.ExitCode != 0)
        {
            File.Delete(building);
            throw new InvalidOperationException($"the disk limit could not be applied: mkfs.ext4 of a {sizeMiB} MiB layer failed: {mkfs.StandardError.Trim()}");
        }

        File.Move(building, image);
    }

    /// <summary>
    /// Mounts the layer image and the overlay. <paramref name="idBase"/> (null: no user namespace) is the host id that
    /// root in the sandbox maps to; the template is then idmapped by the same offset.
    /// </summary>
    public static async Task<string?> MountAsync(string stateDir, string templateRoot, uint? idBase, uint idCount, CancellationToken cancellationToken)
    {
        var layer = LayerDir(stateDir);
        await MountLayerAsync(stateDir, cancellationToken);
        var upper = Upper(stateDir);
        var work = Path.Combine(layer, "work");
        Directory.CreateDirectory(upper);
        Directory.CreateDirectory(work);
        var lower = templateRoot;
        string? notMapped = idBase is null ? "no user namespace" : null;
        if (idBase is { } id)
        {
            // Root of the sandbox owns its root directory; everything else in the upper layer is created by the sandbox.
            Chown(upper, id);
            lower = Lower(stateDir);
            Directory.CreateDirectory(lower);
            notMapped = IsMountPoint(lower) ? null : await TryIdMapAsync(templateRoot, lower, id, idCount, cancellationToken);
            if (notMapped is not null)
            {
                lower = templateRoot;
            }
        }

        var merged = Merged(stateDir);
        Directory.CreateDirectory(merged);
        if (!IsMountPoint(merged) && NativeMethods.mount("overlay", merged, "overlay", 0, $"lowerdir={lower},upperdir={upper},workdir={work}") != 0)
        {
            throw new InvalidOperationException($"mounting the overlay at {merged} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }

        return notMapped;
    }

    /// <summary>Loop-mounts the layer image at <c>stateDir/layer</c> unless it is mounted already.</summary>
    public static async Task MountLayerAsync(string stateDir, CancellationToken cancellationToken)
    {
        var layer = LayerDir(stateDir);
        Directory.CreateDirectory(layer);
        if (IsMountPoint(layer))
        {
            return;
        }

        var mount = await Cli.Wrap("mount")
            .WithArguments(["-t", "ext4", "-o", "loop,nosuid,nodev", Path.Combine(stateDir, Image), layer])
            .WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(cancellationToken);
        if (mount.ExitCode != 0)
        {
            throw new InvalidOperationException($"the disk limit could not be applied: mounting the layer image failed: {mount.StandardError.Trim()}");
        }
    }

    /// <summary>Detaches the overlay, the idmapped template and the layer image; returns what it unmounted.</summary>
    public static IReadOnlyList<string> Unmount(string stateDir)
    {
        var done = new List<string>();
        foreach (var dir in new[] { Merged(stateDir), Lower(stateDir), LayerDir(stateDir) })
        {
            // Lazy detach: a process still holding a file (one that escaped the kill) cannot keep the mount busy.
            while (IsMountPoint(dir))
            {
                if (NativeMethods.umount2(dir, NativeMethods.MntDetach) != 0)
                {
                    throw new InvalidOperationException($"unmounting {dir} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
                }

                done.Add($"unmounted {dir}");
            }
        }

        return done;
    }

    /// <summary>Bytes the layer image holds on the host disk (its allocated blocks, not its size).</summary>
    public static long AllocatedBytes(string stateDir)
    {
        var image = Path.Combine(stateDir, Image);
        if (!File.Exists(image))
        {
            return 0;
        }

        return NativeMethods.AllocatedBytes(image) ?? new FileInfo(image).Length;
    }

    /// <summary>
    /// The mounted layer's filesystem (statfs): bytes the sandbox has written and the quota; null when it is not
    /// mounted (a stopped or paused sandbox).
    /// </summary>
    public static (long Used, long Total)? Usage(string stateDir)
    {
        var layer = LayerDir(stateDir);
        if (!IsMountPoint(layer))
        {
            return null;
        }

        try
        {
            var drive = new DriveInfo(layer);
            return (drive.TotalSize - drive.TotalFreeSpace, drive.TotalSize);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return null;
        }
    }

    /// <summary>
    /// Moves the ownership of everything in the upper layer from the id range the sandbox last ran with to the one it
    /// runs with now (its ids follow its network slot, which a resume may change), and records the new range.
    /// </summary>
    public static void ShiftOwnership(string stateDir, uint idBase, uint count)
    {
        var saved = Path.Combine(stateDir, "idbase");
        if (File.Exists(saved) && uint.TryParse(File.ReadAllText(saved), CultureInfo.InvariantCulture, out var old) && old != idBase)
        {
            var upper = Upper(stateDir);
            foreach (var path in Directory.EnumerateFileSystemEntries(upper, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0, IgnoreInaccessible = false }).Prepend(upper))
            {
                if (NativeMethods.Owner(path) is var (uid, gid))
                {
                    NativeMethods.lchown(path, Shift(uid), Shift(gid));
                }
            }

            uint Shift(uint id) => id >= old && id - old < count ? idBase + (id - old) : id;
        }

        File.WriteAllText(saved, idBase.ToString(CultureInfo.InvariantCulture));
    }

    public static bool IsMountPoint(string dir) => HostTools.MountPoints().Contains(dir);

    /// <summary>Deletes a sandbox's state directory unless something is still mounted under it; says which it did.</summary>
    public static string? RemoveStateDir(string stateDir)
    {
        if (!Directory.Exists(stateDir))
        {
            return null;
        }

        if (HostTools.MountPoints().Any(m => m == stateDir || m.StartsWith(stateDir + "/", StringComparison.Ordinal)))
        {
            return $"kept {stateDir}: something is still mounted under it";
        }

        Directory.Delete(stateDir, recursive: true);
        return $"removed {stateDir}";
    }

    /// <summary>Ids of sandboxes under <paramref name="sandboxesDir"/> with one of the named mounts still attached.</summary>
    public static IEnumerable<string> MountedSandboxIds(string sandboxesDir, params string[] mounts)
    {
        var prefix = sandboxesDir + "/";
        foreach (var mountPoint in HostTools.MountPoints())
        {
            if (mountPoint.StartsWith(prefix, StringComparison.Ordinal) && mounts.Contains(Path.GetFileName(mountPoint)))
            {
                var id = mountPoint[prefix.Length..mountPoint.LastIndexOf('/')];
                if (!id.StartsWith("probe-", StringComparison.Ordinal) && !id.Contains('/', StringComparison.Ordinal))
                {
                    yield return id;
                }
            }
        }
    }

    /// <summary>
    /// Lets others pass through (execute only: not list) every directory from <paramref name="dir"/> up, so a sandbox's
    /// unprivileged host ids can open its root by path; only Airlock's own directories are changed.
    /// </summary>
    public static void MakeTraversable(string dir, string dataDirectory)
    {
        var dataDir = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dataDirectory));
        for (var d = dir; d.Length > 1; d = Path.GetDirectoryName(d)!)
        {
            if (OperatingSystem.IsWindows())
            {
                throw new PlatformNotSupportedException("Airlock's sandbox drivers need Linux");
            }

            var mode = File.GetUnixFileMode(d);
            if ((mode & UnixFileMode.OtherExecute) != 0)
            {
                continue;
            }

            if (!d.StartsWith(dataDir, StringComparison.Ordinal))
            {
                throw new InvalidOperationException($"sandbox uids cannot pass through '{d}' (mode {mode}); put the data directory where others may traverse, or chmod o+x '{d}'");
            }

            File.SetUnixFileMode(d, mode | UnixFileMode.OtherExecute);
        }
    }

    /// <summary>
    /// Attaches an idmapped view of <paramref name="source"/> at <paramref name="target"/>: host ids 0..count appear as
    /// idBase..idBase+count. mount_setattr needs a user namespace holding that mapping; a short-lived <c>unshare</c>
    /// provides one (no .NET or util-linux call creates a bare user namespace fd). False when the kernel or the
    /// template's filesystem cannot idmap (then the template keeps host ownership, unmapped inside the sandbox).
    /// Returns null on success, else why not.
    /// </summary>
    private static async Task<string?> TryIdMapAsync(string source, string target, uint idBase, uint count, CancellationToken cancellationToken)
    {
        using var holder = System.Diagnostics.Process.Start(new ProcessStartInfo("unshare", ["--user", "--", "sleep", "30"]) { UseShellExecute = false, RedirectStandardError = true });
        if (holder is null)
        {
            return "unshare did not start";
        }

        try
        {
            var ours = new FileInfo("/proc/self/ns/user").LinkTarget;
            for (var i = 0; i < 200 && !holder.HasExited; i++)
            {
                if (new FileInfo($"/proc/{holder.Id}/ns/user").LinkTarget is { } theirs && theirs != ours)
                {
                    break;
                }

                await Task.Delay(5, cancellationToken);
            }

            var map = string.Create(CultureInfo.InvariantCulture, $"0 {idBase} {count}");
            await File.WriteAllTextAsync($"/proc/{holder.Id}/uid_map", map, cancellationToken);
            await File.WriteAllTextAsync($"/proc/{holder.Id}/setgroups", "deny", cancellationToken);
            await File.WriteAllTextAsync($"/proc/{holder.Id}/gid_map", map, cancellationToken);
            using var userns = File.OpenHandle($"/proc/{holder.Id}/ns/user", FileMode.Open, FileAccess.Read);

            const uint OpenTreeClone = 1, OpenTreeCloexec = 0x80000, AtEmptyPath = 0x1000, AtRecursive = 0x8000, MoveMountFEmptyPath = 4;
            // Read-only as well: overlayfs never writes its lower layer, and nothing (a recursive delete of a state
            // directory whose mounts were left behind, say) may reach the shared template through this view.
            const ulong MountAttrRdonly = 0x00000001, MountAttrIdmap = 0x00100000;
            const int AtFdcwd = -100;
            var tree = NativeMethods.open_tree(AtFdcwd, source, OpenTreeClone | OpenTreeCloexec | AtRecursive);
            if (tree < 0)
            {
                return "open_tree: " + Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());
            }

            try
            {
                var attr = new NativeMethods.MountAttr { AttrSet = MountAttrIdmap | MountAttrRdonly, UsernsFd = (ulong)userns.DangerousGetHandle() };
                if (NativeMethods.mount_setattr(tree, "", AtEmptyPath | AtRecursive, ref attr, (nuint)Marshal.SizeOf<NativeMethods.MountAttr>()) != 0)
                {
                    return "mount_setattr(MOUNT_ATTR_IDMAP): " + Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());
                }

                return NativeMethods.move_mount(tree, "", AtFdcwd, target, MoveMountFEmptyPath) != 0
                    ? "move_mount: " + Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())
                    : null;
            }
            finally
            {
                NativeMethods.close(tree);
            }
        }
        catch (Exception e) when (e is EntryPointNotFoundException or IOException or UnauthorizedAccessException)
        {
            return e.Message;
        }
        finally
        {
            if (!holder.HasExited)
            {
                holder.Kill();
            }

            await holder.WaitForExitAsync(CancellationToken.None);
        }
    }

    private static void Chown(string path, uint id)
    {
        if (NativeMethods.lchown(path, id, id) != 0)
        {
            throw new InvalidOperationException($"chown {path} to {id} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
    }
}

using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Filesystem;
using Microsoft.Win32.SafeHandles;

namespace Airlock.Guest;

/// <summary>
/// One directory watch on its own inotify instance (https://man7.org/linux/man-pages/man7/inotify.7.html), read on a
/// thread of its own. Events are translated as envd's (fsnotify's) are: create (also a move in), write, remove, rename
/// (the old name of a move), chmod; names are relative to the watched directory. Recursive watches add every
/// subdirectory, including ones created or moved in later, and follow renames inside the tree.
/// </summary>
internal sealed class DirectoryWatch : IDisposable
{
    /// <summary>Directories one recursive watch covers at most (each is an inotify watch of the kernel's per-user budget).</summary>
    public const int MaxDirectories = 8192;

    private const int NonBlock = 0x800;
    private const int CloseOnExec = 0x80000;
    private const uint Modify = 0x2, Attrib = 0x4, MovedFrom = 0x40, MovedTo = 0x80, Create = 0x100, Delete = 0x200;
    private const uint Overflow = 0x4000, Ignored = 0x8000, IsDirectory = 0x40000000;
    private const uint OnlyDirectory = 0x01000000, DontFollow = 0x02000000, ExcludeUnlinked = 0x04000000;
    private const uint Mask = Modify | Attrib | MovedFrom | MovedTo | Create | Delete | OnlyDirectory | ExcludeUnlinked;

    private readonly SafeFileHandle _inotify;
    private readonly string _root;
    private readonly bool _recursive;
    private readonly Func<Func<int>, int> _asUser;
    private readonly Action<FilesystemEvent, string> _onEvent;
    private readonly Action<ConnectException> _onError;
    private readonly Dictionary<int, string> _directories = []; // watch descriptor → directory relative to the root
    private readonly HashSet<uint> _uploads = []; // rename cookies of uploads' temporary files (the reader's alone)
    private volatile bool _stopped;

    private DirectoryWatch(SafeFileHandle inotify, string root, bool recursive, Func<Func<int>, int> asUser, Action<FilesystemEvent, string> onEvent, Action<ConnectException> onError)
    {
        _inotify = inotify;
        _root = root;
        _recursive = recursive;
        _asUser = asUser;
        _onEvent = onEvent;
        _onError = onError;
    }

    /// <summary>
    /// Watches <paramref name="root"/> (an existing directory), adding watches with <paramref name="asUser"/>'s
    /// permissions. <paramref name="onEvent"/> gets each event and its full path, on the watch's thread; <paramref
    /// name="onError"/> the failure that stopped the watch.
    /// </summary>
    public static DirectoryWatch Start(string root, bool recursive, Func<Func<int>, int> asUser, Action<FilesystemEvent, string> onEvent, Action<ConnectException> onError)
    {
        var inotify = NativeMethods.inotify_init1(NonBlock | CloseOnExec);
        if (inotify.IsInvalid)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new ConnectException(ConnectCodes.ResourceExhausted, $"cannot create a watcher: {Marshal.GetPInvokeErrorMessage(errno)}");
        }

        var watch = new DirectoryWatch(inotify, root, recursive, asUser, onEvent, onError);
        try
        {
            if (asUser(() => watch.Add(root, string.Empty, required: true)) < 0)
            {
                throw new ConnectException(ConnectCodes.Internal, $"cannot watch '{root}'");
            }
        }
        catch
        {
            inotify.Dispose();
            throw;
        }

        _ = Task.Factory.StartNew(watch.ReadLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        return watch;
    }

    public void Dispose()
    {
        _stopped = true;
        _inotify.Dispose();
    }

    /// <summary>Adds a watch on a directory and, when recursive, on every directory below it. Runs as the user.</summary>
    private int Add(string path, string relative, bool required)
    {
        var wd = NativeMethods.inotify_add_watch(_inotify, path, Mask | (required ? 0 : DontFollow));
        if (wd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (!required)
            {
                return -1; // gone again, or not the user's to watch: the rest of the tree is still watched
            }

            throw errno switch
            {
                Errno.EACCES or Errno.EPERM => new ConnectException(ConnectCodes.PermissionDenied, $"permission denied: '{path}'"),
                Errno.ENOENT => new ConnectException(ConnectCodes.NotFound, $"'{path}' does not exist"),
                Errno.ENOTDIR => new ConnectException(ConnectCodes.InvalidArgument, $"'{path}' is not a directory"),
                Errno.ENOSPC => new ConnectException(ConnectCodes.ResourceExhausted, "the sandbox's inotify watch limit is reached"),
                _ => new ConnectException(ConnectCodes.Internal, $"cannot watch '{path}': {Marshal.GetPInvokeErrorMessage(errno)}"),
            };
        }

        lock (_directories)
        {
            _directories[wd] = relative;
            if (!_recursive)
            {
                return wd;
            }
        }

        IEnumerable<string> children;
        try
        {
            children = Directory.EnumerateDirectories(path).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return wd;
        }

        foreach (var child in children)
        {
            bool full;
            lock (_directories)
            {
                full = _directories.Count >= MaxDirectories;
            }

            if (full)
            {
                if (required)
                {
                    throw new ConnectException(ConnectCodes.ResourceExhausted, $"'{_root}' has more than {MaxDirectories} directories to watch; watch a smaller tree");
                }

                break;
            }

            // Symlinked directories are not followed (DontFollow): a link loop would never end, as with fsnotify.
            try
            {
                if ((File.GetAttributes(child) & FileAttributes.ReparsePoint) == 0)
                {
                    Add(child, Path.Join(relative, Path.GetFileName(child)), required: false);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Gone again, or not the user's to look at.
            }
        }

        return wd;
    }

    private unsafe void ReadLoop()
    {
        var buffer = new byte[64 * 1024];
        var added = false;
        try
        {
            _inotify.DangerousAddRef(ref added);
            var poll = new NativeMethods.PollFd { Fd = (int)_inotify.DangerousGetHandle(), Events = 0x1 };
            while (!_stopped)
            {
                if (NativeMethods.poll(&poll, 1, 200) <= 0)
                {
                    continue;
                }

                nint read;
                fixed (byte* pointer = buffer)
                {
                    read = NativeMethods.read(_inotify, pointer, (nuint)buffer.Length);
                }

                if (read <= 0)
                {
                    continue; // EAGAIN or EINTR
                }

                Dispatch(buffer.AsSpan(0, (int)read));
            }
        }
        catch (ConnectException e)
        {
            _onError(e);
        }
        catch (ObjectDisposedException)
        {
            // Disposed before the loop took its reference.
        }
        finally
        {
            if (added)
            {
                _inotify.DangerousRelease();
            }
        }
    }

    /// <summary>Translates one read's events (each a <c>struct inotify_event</c>: wd, mask, cookie, len, name).</summary>
    private void Dispatch(ReadOnlySpan<byte> events)
    {
        Dictionary<uint, string>? movedAway = null; // directories moved out under a cookie, unless moved back in below
        while (events.Length >= 16)
        {
            var wd = BinaryPrimitives.ReadInt32LittleEndian(events);
            var mask = BinaryPrimitives.ReadUInt32LittleEndian(events[4..]);
            var cookie = BinaryPrimitives.ReadUInt32LittleEndian(events[8..]);
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(events[12..]);
            var rawName = events.Slice(16, length);
            events = events[(16 + length)..];
            var nul = rawName.IndexOf((byte)0);
            var name = Encoding.UTF8.GetString(nul < 0 ? rawName : rawName[..nul]);
            if ((mask & Overflow) != 0)
            {
                throw new ConnectException(ConnectCodes.ResourceExhausted, "the kernel's event queue for this watcher overflowed; events were lost");
            }

            string? directory;
            lock (_directories)
            {
                if ((mask & Ignored) != 0)
                {
                    _directories.Remove(wd);
                    continue;
                }

                if (!_directories.TryGetValue(wd, out directory) || name.Length == 0)
                {
                    continue; // a directory's events about itself: its parent's watch reports them by name
                }
            }

            var relative = Path.Join(directory, name);
            var full = Path.Join(_root, relative);
            var isDirectory = (mask & IsDirectory) != 0;
            if (FileTransfer.IsTemporary(name))
            {
                // An upload writes a temporary sibling and renames it into place; watchers see what envd's in-place
                // write shows instead: the file created and written under its own name.
                if ((mask & MovedFrom) != 0)
                {
                    // Kept across reads: one read may end between the two halves of a rename.
                    if (_uploads.Count > 1024)
                    {
                        _uploads.Clear(); // halves that never came (moved out of the tree)
                    }

                    _uploads.Add(cookie);
                }

                continue;
            }

            if ((mask & MovedTo) != 0 && _uploads.Remove(cookie))
            {
                Emit(EventType.Create, relative, full);
                Emit(EventType.Write, relative, full);
                continue;
            }
            if ((mask & (Create | MovedTo)) != 0)
            {
                if (_recursive && isDirectory)
                {
                    if ((mask & MovedTo) != 0 && movedAway is not null && movedAway.Remove(cookie, out var from))
                    {
                        Rebase(from, relative);
                    }
                    else
                    {
                        _asUser(() => Add(full, relative, required: false));
                    }
                }

                Emit(EventType.Create, relative, full);
            }

            if ((mask & MovedFrom) != 0)
            {
                if (_recursive && isDirectory)
                {
                    (movedAway ??= [])[cookie] = relative;
                }

                Emit(EventType.Rename, relative, full);
            }

            if ((mask & Attrib) != 0)
            {
                Emit(EventType.Chmod, relative, full);
            }

            if ((mask & Modify) != 0)
            {
                Emit(EventType.Write, relative, full);
            }

            if ((mask & Delete) != 0)
            {
                Emit(EventType.Remove, relative, full);
            }
        }

        // Moved out of the tree: its watches would report names that are no longer inside it.
        foreach (var gone in movedAway?.Values ?? Enumerable.Empty<string>())
        {
            lock (_directories)
            {
                foreach (var (wd, path) in _directories.Where(d => IsUnder(d.Value, gone)).ToList())
                {
                    NativeMethods.inotify_rm_watch(_inotify, wd);
                    _directories.Remove(wd);
                }
            }
        }
    }

    /// <summary>A directory renamed inside the tree keeps its watches; their paths follow it.</summary>
    private void Rebase(string from, string to)
    {
        lock (_directories)
        {
            foreach (var (wd, path) in _directories.Where(d => IsUnder(d.Value, from)).ToList())
            {
                _directories[wd] = to + path[from.Length..];
            }
        }
    }

    private static bool IsUnder(string path, string directory) =>
        path == directory || path.StartsWith(directory + "/", StringComparison.Ordinal);

    private void Emit(EventType type, string relative, string full) =>
        _onEvent(new FilesystemEvent { Name = relative, Type = type }, full);
}

using System.Runtime.InteropServices;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Filesystem;
using Google.Protobuf;

namespace Airlock.Guest;

/// <summary>envd's <c>filesystem.Filesystem</c> service; the watcher methods are <see cref="WatchService"/>'s.</summary>
internal sealed class FilesystemService(AgentOptions options, Users users, Entries entries)
{
    public Task HandleAsync(HttpContext context)
    {
        var method = context.Request.RouteValues["method"] as string;
        return method switch
        {
            "Stat" => Unary(context, StatRequest.Parser, (r, user) => new StatResponse { Entry = entries.Describe(Paths.Resolve(r.Path, user)) }),
            "ListDir" => Unary(context, ListDirRequest.Parser, ListDir),
            "MakeDir" => Unary(context, MakeDirRequest.Parser, MakeDir),
            "Move" => Unary(context, MoveRequest.Parser, (r, user) => Move(r, user, context.RequestAborted)),
            "Remove" => Unary(context, RemoveRequest.Parser, Remove),
            _ => ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.NotFound, $"filesystem.Filesystem has no method '{method}'")),
        };
    }

    private Task Unary<TRequest>(HttpContext context, MessageParser<TRequest> parser, Func<TRequest, UserAccount, IMessage> handler)
        where TRequest : IMessage<TRequest>, new() =>
        ConnectRpc.UnaryAsync(context, parser, (request, _) =>
        {
            // The whole handler runs as the user, so every lookup, check and change is subject to its permissions.
            var user = users.Resolve(ConnectRpc.User(context), options.DefaultUser);
            return ValueTask.FromResult(Guard(() => users.As(user, () => handler(request, user))));
        });

    /// <summary>Turns file-system exceptions into Connect errors with the path in the message.</summary>
    internal static void Guard(Action action) => Guard(() =>
    {
        action();
        return 0;
    });

    /// <summary>Turns file-system exceptions into Connect errors with the path in the message.</summary>
    internal static T Guard<T>(Func<T> action)
    {
        try
        {
            return action();
        }
        catch (UnauthorizedAccessException e)
        {
            throw new ConnectException(ConnectCodes.PermissionDenied, e.Message);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ConnectException(ConnectCodes.NotFound, e.Message);
        }
        catch (PathTooLongException e)
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, e.Message);
        }
        catch (IOException e) when ((e.HResult & 0xFFFF) == 28)
        {
            throw new ConnectException(ConnectCodes.ResourceExhausted, "no space left on the sandbox's disk");
        }
        catch (IOException e) when (e.HResult is Errno.EPERM or Errno.EACCES)
        {
            // On Unix .NET reports a refused directory rename as an IOException (Windows' wording) carrying the errno.
            throw new ConnectException(ConnectCodes.PermissionDenied, e.Message);
        }
        catch (IOException e)
        {
            throw new ConnectException(ConnectCodes.FailedPrecondition, e.Message);
        }
    }

    private ListDirResponse ListDir(ListDirRequest request, UserAccount user)
    {
        var root = Paths.Resolve(request.Path, user);
        if (!entries.Exists(root))
        {
            throw new ConnectException(ConnectCodes.NotFound, $"'{root}' does not exist");
        }

        // A symlink to a directory is listed as that directory, like `ls` does for the path it was given.
        if (!Directory.Exists(root))
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, $"'{root}' is not a directory");
        }

        var response = new ListDirResponse();
        Walk(root, 1, Math.Max(1, (int)Math.Min(request.Depth, 64u)), response);
        return response;
    }

    private void Walk(string directory, int depth, int maxDepth, ListDirResponse response)
    {
        foreach (var path in Directory.EnumerateFileSystemEntries(directory).Order(StringComparer.Ordinal))
        {
            var entry = entries.Describe(path);
            response.Entries.Add(entry);
            if (entry.Type == FileType.Directory && depth < maxDepth)
            {
                try
                {
                    Walk(path, depth + 1, maxDepth, response);
                }
                catch (Exception e) when (e is UnauthorizedAccessException or ConnectException { Code: ConnectCodes.PermissionDenied })
                {
                    // A subdirectory the user may not read is listed but not entered, like `ls -R` carrying on past
                    // one; the directory asked for itself must be readable (that failure is the caller's).
                }
            }
        }
    }

    private MakeDirResponse MakeDir(MakeDirRequest request, UserAccount user)
    {
        var path = Paths.Resolve(request.Path, user);
        if (entries.Exists(path))
        {
            throw new ConnectException(ConnectCodes.AlreadyExists, $"'{path}' already exists");
        }

        CreateDirectories(path);
        return new MakeDirResponse { Entry = entries.Describe(path) };
    }

    /// <summary>
    /// Creates a directory and any missing parents. Called inside <see cref="Users.As{T}"/>, so each is made by, and
    /// owned by, the user the request acts for.
    /// </summary>
    internal void CreateDirectories(string path)
    {
        var missing = new Stack<string>();
        for (var p = path; !string.IsNullOrEmpty(p) && !Directory.Exists(p); p = Path.GetDirectoryName(p))
        {
            if (entries.Exists(p))
            {
                throw new ConnectException(ConnectCodes.FailedPrecondition, $"'{p}' exists and is not a directory");
            }

            missing.Push(p);
        }

        while (missing.TryPop(out var p))
        {
            Directory.CreateDirectory(p);
        }
    }

    private MoveResponse Move(MoveRequest request, UserAccount user, CancellationToken cancellationToken)
    {
        var source = Paths.Resolve(request.Source, user);
        var destination = Paths.Resolve(request.Destination, user);
        if (!entries.Exists(source))
        {
            throw new ConnectException(ConnectCodes.NotFound, $"'{source}' does not exist");
        }

        if (entries.Exists(destination))
        {
            throw new ConnectException(ConnectCodes.AlreadyExists, $"'{destination}' already exists");
        }

        if (Path.GetDirectoryName(destination) is { } parent)
        {
            CreateDirectories(parent);
        }

        Rename(source, destination, entries.IsDirectory(source), cancellationToken);
        return new MoveResponse { Entry = entries.Describe(destination) };
    }

    /// <summary>
    /// rename(2) that never replaces what is at <paramref name="destination"/>. Not <c>File.Move</c>: on Unix it links
    /// and unlinks, and when the link is refused it copies and then deletes, leaving the copy behind when the delete
    /// is refused too (a user moving a file out of a directory it may not write).
    /// </summary>
    private static void Rename(string source, string destination, bool isDirectory, CancellationToken cancellationToken)
    {
        const int AtFdCwd = -100;
        const uint RenameNoReplace = 1;
        if (NativeMethods.renameat2(AtFdCwd, source, AtFdCwd, destination, RenameNoReplace) == 0)
        {
            return;
        }

        var errno = Marshal.GetLastPInvokeError();
        if (errno == Errno.EINVAL && NativeMethods.rename(source, destination) == 0)
        {
            return; // a file system without RENAME_NOREPLACE; the caller found the destination free
        }

        errno = errno == Errno.EINVAL ? Marshal.GetLastPInvokeError() : errno;
        if (errno == Errno.EXDEV && !isDirectory)
        {
            // Another file system: copy, then delete the source, and take the copy back if the source must stay.
            CopyAcross(source, destination, cancellationToken);
            try
            {
                File.Delete(source);
            }
            catch
            {
                File.Delete(destination);
                throw;
            }

            return;
        }

        throw errno switch
        {
            Errno.EEXIST => new ConnectException(ConnectCodes.AlreadyExists, $"'{destination}' already exists"),
            Errno.ENOENT => new ConnectException(ConnectCodes.NotFound, $"'{source}' does not exist"),
            Errno.EPERM or Errno.EACCES => new UnauthorizedAccessException($"Access to the path '{source}' or '{destination}' is denied."),
            _ => new IOException($"cannot move '{source}' to '{destination}': {Marshal.GetPInvokeErrorMessage(errno)}", errno),
        };
    }

    /// <summary>
    /// The copy of a move across file systems. Not <c>File.Copy</c>: it opens the source however it is, and a FIFO
    /// there blocks the agent until something writes to it. A symlink is copied as a symlink, a regular file through
    /// <see cref="RegularFile"/> (a FIFO, socket or device is refused, as is a pseudo-file); the copy stops when the
    /// caller goes away.
    /// </summary>
    private static void CopyAcross(string source, string destination, CancellationToken cancellationToken)
    {
        if (FileStatus.Lstat(source) is { Type: FileStatus.Symlink })
        {
            File.CreateSymbolicLink(destination, new FileInfo(source).LinkTarget ?? throw new ConnectException(ConnectCodes.NotFound, $"'{source}' does not exist"));
            return;
        }

        using var file = RegularFile.Open(source);
        if (file.Length is null && file.Fill(stackalloc byte[1]) != 0)
        {
            throw new ConnectException(ConnectCodes.FailedPrecondition, $"'{source}' is a kernel pseudo-file; it cannot be moved");
        }

        // CreateNew: a destination that appeared meanwhile is not overwritten (and not ours to delete).
        var target = new FileStream(destination, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1);
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            using (target)
            {
                NativeMethods.fchmod(target.SafeFileHandle, file.Permissions & 0x1FF); // as File.Copy keeps the mode
                int read;
                while ((read = file.Read(buffer)) > 0)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    target.Write(buffer, 0, read);
                }
            }
        }
        catch
        {
            File.Delete(destination);
            throw;
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private RemoveResponse Remove(RemoveRequest request, UserAccount user)
    {
        var path = Paths.Resolve(request.Path, user);
        if (!entries.Exists(path))
        {
            throw new ConnectException(ConnectCodes.NotFound, $"'{path}' does not exist");
        }

        if (entries.IsDirectory(path))
        {
            DeleteTree(path);
        }
        else
        {
            File.Delete(path);
        }

        return new RemoveResponse();
    }

    /// <summary>
    /// Deletes a directory and everything in it, never following a symlink. Not <c>Directory.Delete(recursive)</c>: on
    /// Unix it reports a refused rmdir as a bare IOException without the errno, so a permission failure would read as
    /// any other.
    /// </summary>
    private void DeleteTree(string directory)
    {
        foreach (var path in Directory.EnumerateFileSystemEntries(directory).ToList())
        {
            if (entries.IsDirectory(path))
            {
                DeleteTree(path);
            }
            else
            {
                File.Delete(path);
            }
        }

        // ENOENT: removed under us, which is the outcome asked for.
        if (NativeMethods.rmdir(directory) != 0 && Marshal.GetLastPInvokeError() is var errno and not Errno.ENOENT)
        {
            throw errno is Errno.EPERM or Errno.EACCES
                ? new UnauthorizedAccessException($"Access to the path '{directory}' is denied.")
                : new IOException($"cannot remove '{directory}': {Marshal.GetPInvokeErrorMessage(errno)}", errno);
        }
    }
}

using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Filesystem;
using Google.Protobuf;

namespace Airlock.Guest;

/// <summary>envd's <c>filesystem.Filesystem</c> service (the watcher methods are not implemented yet).</summary>
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
            "Move" => Unary(context, MoveRequest.Parser, Move),
            "Remove" => Unary(context, RemoveRequest.Parser, Remove),
            "WatchDir" or "CreateWatcher" or "GetWatcherEvents" or "RemoveWatcher" =>
                ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.Unimplemented, $"filesystem.Filesystem/{method} is not implemented by this agent")),
            _ => ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.NotFound, $"filesystem.Filesystem has no method '{method}'")),
        };
    }

    private Task Unary<TRequest>(HttpContext context, MessageParser<TRequest> parser, Func<TRequest, UserAccount, IMessage> handler)
        where TRequest : IMessage<TRequest>, new() =>
        ConnectRpc.UnaryAsync(context, parser, (request, _) =>
        {
            var user = users.Resolve(ConnectRpc.User(context), options.DefaultUser);
            return ValueTask.FromResult(Guard(() => handler(request, user)));
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
                Walk(path, depth + 1, maxDepth, response);
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

        CreateDirectories(path, user);
        return new MakeDirResponse { Entry = entries.Describe(path) };
    }

    /// <summary>Creates a directory and any missing parents, each owned by the user the request acts for.</summary>
    internal void CreateDirectories(string path, UserAccount user)
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
            users.GiveTo(p, user);
        }
    }

    private MoveResponse Move(MoveRequest request, UserAccount user)
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
            CreateDirectories(parent, user);
        }

        if (entries.IsDirectory(source))
        {
            Directory.Move(source, destination);
        }
        else
        {
            File.Move(source, destination);
        }

        return new MoveResponse { Entry = entries.Describe(destination) };
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
            Directory.Delete(path, recursive: true);
        }
        else
        {
            File.Delete(path);
        }

        return new RemoveResponse();
    }
}

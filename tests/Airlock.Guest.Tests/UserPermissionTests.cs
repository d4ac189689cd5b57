using System.Net;
using Airlock.Envd;
using Airlock.Envd.Client;
using Airlock.Envd.Connect;

namespace Airlock.Guest.Tests;

/// <summary>
/// The agent runs as root here (as in a microVM) and acts for a non-root user: every file operation must be subject
/// to that user's permissions, exactly like a command the user runs.
/// </summary>
[Trait("Category", "Integration")]
public sealed class UserPermissionTests(AgentFixture agent, SandboxUserFixture user) : IClassFixture<AgentFixture>, IClassFixture<SandboxUserFixture>
{
    private static CancellationToken Ct => CancellationToken.None;

    private EnvdClient AsUser => agent.Client(user: user.Name);

    private string InArea(string name) => Path.Combine(user.Area, name);

    private static async Task<string> ReadAsync(EnvdClient client, string path)
    {
        await using var stream = await client.ReadFileAsync(path, Ct);
        using var reader = new StreamReader(stream);
        return await reader.ReadToEndAsync(Ct);
    }

    private static async Task DeniedAsync(Func<Task> call)
    {
        var e = await Assert.ThrowsAsync<EnvdException>(call);
        Assert.Equal((ConnectCodes.PermissionDenied, 403), (e.Code, e.HttpStatus));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_user_cannot_overwrite_or_create_files_in_root_owned_places_and_nothing_changes()
    {
        Assert.Equal("root", Environment.UserName);
        var e = await Assert.ThrowsAsync<EnvdException>(() => AsUser.WriteFileAsync(InArea("owned.txt"), new MemoryStream("attacker"u8.ToArray()), Ct));
        Assert.Equal((ConnectCodes.PermissionDenied, 403), (e.Code, e.HttpStatus));
        Assert.Contains($"user '{user.Name}' may not write", e.Message, StringComparison.Ordinal);
        Assert.Equal("original", await File.ReadAllTextAsync(InArea("owned.txt"), Ct));
        await DeniedAsync(() => AsUser.WriteFileAsync(InArea("new.txt"), new MemoryStream("x"u8.ToArray()), Ct));
        await DeniedAsync(() => AsUser.WriteFileAsync(InArea("newdir/new.txt"), new MemoryStream("x"u8.ToArray()), Ct));

        // The multipart form, with the destination named in the part, is held to the same rule.
        using var form = new MultipartFormDataContent();
        form.Add(new ByteArrayContent("attacker"u8.ToArray()), "file", InArea("owned.txt"));
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, $"files?username={user.Name}")) { Content = form };
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        using var response = await agent.Http.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Contains("\"code\":403", await response.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);

        // In a directory anyone may write to but whose sticky bit protects root's file, the upload is made and then
        // refused at the rename into place, and its temporary file is cleaned up.
        await DeniedAsync(() => AsUser.WriteFileAsync(InArea("sticky/root.txt"), new MemoryStream("attacker"u8.ToArray()), Ct));
        await DeniedAsync(() => AsUser.MoveAsync(InArea("sticky/root.txt"), InArea("sticky/mine.txt"), Ct));

        Assert.Equal("original", await File.ReadAllTextAsync(InArea("owned.txt"), Ct));
        Assert.Equal("original", await File.ReadAllTextAsync(InArea("sticky/root.txt"), Ct));
        Assert.False(File.Exists(InArea("new.txt")));
        Assert.False(Directory.Exists(InArea("newdir")));
        Assert.Equal([InArea("sticky/root.txt")], Directory.GetFiles(InArea("sticky")));
        Assert.Empty(Directory.GetFiles(user.Area, ".*airlock-*"));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_user_cannot_read_what_only_root_may_read_even_through_its_own_symlink()
    {
        await DeniedAsync(() => ReadAsync(AsUser, InArea("secret.txt")));
        await DeniedAsync(() => ReadAsync(AsUser, InArea("private/inner/file.txt")));
        var link = Path.Combine(user.Home, "link-" + Guid.NewGuid().ToString("N")[..6]);
        File.CreateSymbolicLink(link, InArea("secret.txt"));
        await DeniedAsync(() => ReadAsync(AsUser, link));

        // Readable by the world, and by a supplementary group of the user's: both work.
        Assert.Equal("original", await ReadAsync(AsUser, InArea("owned.txt")));
        Assert.Equal("for the group", await ReadAsync(AsUser, InArea("group.txt")));
        var missing = await Assert.ThrowsAsync<EnvdException>(() => ReadAsync(AsUser, InArea("nope.txt")));
        Assert.Equal(404, missing.HttpStatus);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_user_cannot_list_or_stat_inside_a_directory_only_root_may_enter()
    {
        await DeniedAsync(() => AsUser.ListDirAsync(InArea("private"), 1, Ct));
        await DeniedAsync(() => AsUser.StatAsync(InArea("private/inner"), Ct));
        Assert.Equal("dir", (await AsUser.StatAsync(InArea("private"), Ct)).Type);

        // A deep listing of a readable directory shows the private one but does not enter it.
        var listed = await AsUser.ListDirAsync(user.Area, 3, Ct);
        Assert.Contains(listed, e => e.Path == InArea("private"));
        Assert.DoesNotContain(listed, e => e.Path.StartsWith(InArea("private") + "/", StringComparison.Ordinal));

        var e = await Assert.ThrowsAsync<EnvdException>(() => Task.Run(async () =>
        {
            await foreach (var _ in AsUser.StartAsync(new ProcessSpec { Command = "pwd", Cwd = InArea("private/inner"), User = user.Name }, Ct))
            {
            }
        }));
        Assert.Equal(ConnectCodes.InvalidArgument, e.Code);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_user_cannot_make_move_or_remove_inside_a_root_owned_directory()
    {
        await DeniedAsync(() => AsUser.MakeDirAsync(InArea("made"), Ct));
        await DeniedAsync(() => AsUser.MakeDirAsync(InArea("private/made"), Ct));
        await DeniedAsync(() => AsUser.MoveAsync(InArea("owned.txt"), InArea("moved.txt"), Ct));
        await DeniedAsync(() => AsUser.MoveAsync(InArea("owned.txt"), Path.Combine(user.Home, "stolen.txt"), Ct));
        await DeniedAsync(() => AsUser.MoveAsync(InArea("private"), InArea("private-moved"), Ct));
        await DeniedAsync(() => AsUser.RemoveAsync(InArea("owned.txt"), Ct));
        await DeniedAsync(() => AsUser.RemoveAsync(InArea("private"), Ct));

        Assert.False(Directory.Exists(InArea("made")));
        Assert.False(File.Exists(InArea("moved.txt")));
        Assert.False(Directory.Exists(InArea("private-moved")));
        Assert.False(File.Exists(Path.Combine(user.Home, "stolen.txt")));
        Assert.Equal("original", await File.ReadAllTextAsync(InArea("owned.txt"), Ct));
        Assert.True(File.Exists(InArea("private/inner/file.txt")));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_user_works_freely_in_its_own_home_and_owns_everything_it_creates()
    {
        var owner = $"{user.Uid}:{user.Gid}";
        var dir = "work-" + Guid.NewGuid().ToString("N")[..6];
        await AsUser.WriteFileAsync($"{dir}/deep/a.txt", new MemoryStream("mine"u8.ToArray()), Ct);
        var file = Path.Combine(user.Home, dir, "deep", "a.txt");
        Assert.Equal("mine", await ReadAsync(AsUser, $"~/{dir}/deep/a.txt"));
        Assert.Equal(owner, await SandboxUserFixture.OwnerAsync(file));
        Assert.Equal(owner, await SandboxUserFixture.OwnerAsync(Path.Combine(user.Home, dir, "deep")));
        Assert.Equal(owner, await SandboxUserFixture.OwnerAsync(Path.Combine(user.Home, dir)));

        // Replacing its own file keeps it the user's.
        await AsUser.WriteFileAsync(file, new MemoryStream("mine again"u8.ToArray()), Ct);
        Assert.Equal("mine again", await File.ReadAllTextAsync(file, Ct));
        Assert.Equal(owner, await SandboxUserFixture.OwnerAsync(file));

        var made = await AsUser.MakeDirAsync($"~/{dir}/made/sub", Ct);
        Assert.Equal("dir", made.Type);
        Assert.Equal(owner, await SandboxUserFixture.OwnerAsync(Path.Combine(user.Home, dir, "made")));
        Assert.Equal(owner, await SandboxUserFixture.OwnerAsync(Path.Combine(user.Home, dir, "made", "sub")));

        var moved = await AsUser.MoveAsync(file, $"~/{dir}/made/b.txt", Ct);
        Assert.Equal(Path.Combine(user.Home, dir, "made", "b.txt"), moved.Path);
        Assert.Equal(["b.txt", "sub"], (await AsUser.ListDirAsync($"~/{dir}/made", 1, Ct)).Select(e => e.Name));
        await AsUser.RemoveAsync($"~/{dir}", Ct);
        Assert.False(Directory.Exists(Path.Combine(user.Home, dir)));

        // The multipart form, naming the user with ?username= as E2B's SDKs do, too.
        var mine = Path.Combine(user.Home, "for-user-" + Guid.NewGuid().ToString("N")[..6]);
        using var form = new MultipartFormDataContent();
        form.Add(new ByteArrayContent("x"u8.ToArray()), "file", mine);
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, $"files?username={user.Name}")) { Content = form };
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        using var response = await agent.Http.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(owner, await SandboxUserFixture.OwnerAsync(mine));
    }

    [Fact(Timeout = 60_000)]
    public async Task The_users_credentials_stay_on_the_thread_that_acts_for_it_under_concurrent_requests()
    {
        var root = agent.Client();
        var calls = Enumerable.Range(0, 20).SelectMany(_ => new[]
        {
            Task.Run(async () => Assert.Equal("root only", await ReadAsync(root, InArea("secret.txt")))),
            Task.Run(() => DeniedAsync(() => ReadAsync(AsUser, InArea("secret.txt")))),
            Task.Run(async () => Assert.Equal(2, (await root.ListDirAsync(InArea("private"), 2, Ct)).Count)),
            Task.Run(() => DeniedAsync(() => AsUser.ListDirAsync(InArea("private"), 1, Ct))),
        });
        await Task.WhenAll(calls);
    }

    [Fact(Timeout = 60_000)]
    public async Task Root_may_do_all_of_it()
    {
        var root = agent.Client();
        var dir = InArea("root-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(dir);
        File.Copy(InArea("owned.txt"), Path.Combine(dir, "owned.txt")); // root's, 0644

        Assert.Equal("root only", await ReadAsync(root, InArea("secret.txt")));
        Assert.Equal("hidden", await ReadAsync(root, InArea("private/inner/file.txt")));
        Assert.Equal(2, (await root.ListDirAsync(InArea("private"), 2, Ct)).Count);
        await root.WriteFileAsync(Path.Combine(dir, "owned.txt"), new MemoryStream("root wrote"u8.ToArray()), Ct);
        Assert.Equal("root wrote", await File.ReadAllTextAsync(Path.Combine(dir, "owned.txt"), Ct));
        await root.WriteFileAsync(Path.Combine(dir, "new/new.txt"), new MemoryStream("x"u8.ToArray()), Ct);
        Assert.Equal("0:0", await SandboxUserFixture.OwnerAsync(Path.Combine(dir, "new/new.txt")));
        await root.MakeDirAsync(Path.Combine(dir, "made"), Ct);
        await root.MoveAsync(Path.Combine(dir, "owned.txt"), Path.Combine(dir, "made/owned.txt"), Ct);
        await root.RemoveAsync(dir, Ct);
        Assert.False(Directory.Exists(dir));
    }
}

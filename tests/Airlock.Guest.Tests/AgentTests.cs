using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Airlock.Envd;
using Airlock.Envd.Client;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Process;

namespace Airlock.Guest.Tests;

[Trait("Category", "Integration")]
public sealed class AgentTests(AgentFixture agent) : IClassFixture<AgentFixture>
{
    private static CancellationToken Ct => CancellationToken.None;

    private static async Task<(string Stdout, string Stderr, ProcessExited End, uint Pid)> RunAsync(EnvdClient client, ProcessSpec spec)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        ProcessExited? end = null;
        uint pid = 0;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(60));
        await foreach (var output in client.StartAsync(spec, timeout.Token))
        {
            switch (output)
            {
                case ProcessStarted s: pid = s.Pid; break;
                case ProcessStdout o: stdout.Append(Encoding.UTF8.GetString(o.Data.Span)); break;
                case ProcessStderr e: stderr.Append(Encoding.UTF8.GetString(e.Data.Span)); break;
                case ProcessExited x: end = x; break;
            }
        }

        Assert.NotNull(end);
        return (stdout.ToString(), stderr.ToString(), end, pid);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Runs_a_command_and_streams_stdout_stderr_and_exit_code(bool binary)
    {
        var (stdout, stderr, end, pid) = await RunAsync(agent.Client(binary), new ProcessSpec
        {
            Command = "/bin/bash",
            Args = ["-c", "echo out; echo err >&2; echo $GREETING; echo ${AIRLOCK_SHOULD_NOT_LEAK:-clean}; exit 3"],
            Env = new Dictionary<string, string> { ["GREETING"] = "hi" },
        });
        Assert.True(pid > 0);
        Assert.Equal("out\nhi\nclean\n", stdout);
        Assert.Equal("err\n", stderr);
        Assert.Equal(3, end.ExitCode);
        Assert.Equal("exit status 3", end.Status);
    }

    [Fact]
    public async Task Relative_cwd_resolves_against_home_and_a_missing_one_is_an_error()
    {
        // The agent runs as root here, whose home (from /etc/passwd) is /root.
        var dir = Directory.CreateTempSubdirectory("airlock-cwd-").FullName;
        try
        {
            var (home, _, _, _) = await RunAsync(agent.Client(), new ProcessSpec { Command = "pwd" });
            Assert.Equal("/root\n", home);
            var (stdout, _, _, _) = await RunAsync(agent.Client(), new ProcessSpec { Command = "pwd", Cwd = ".." + dir });
            Assert.Equal(dir + "\n", stdout);
            var e = await Assert.ThrowsAsync<EnvdException>(() => RunAsync(agent.Client(), new ProcessSpec { Command = "pwd", Cwd = "/does/not/exist" }));
            Assert.Equal(ConnectCodes.InvalidArgument, e.Code);
        }
        finally
        {
            Directory.Delete(dir);
        }
    }

    [Fact]
    public async Task A_missing_executable_ends_with_127_and_says_why()
    {
        var (_, stderr, end, _) = await RunAsync(agent.Client(), new ProcessSpec { Command = "/no/such/binary" });
        Assert.Equal(127, end.ExitCode);
        Assert.Contains("/no/such/binary", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Commands_run_as_the_requested_user_when_the_agent_is_root()
    {
        Assert.Equal("root", Environment.UserName); // the README runs the tests as root
        var (stdout, _, _, _) = await RunAsync(agent.Client(), new ProcessSpec { Command = "id", Args = ["-un"], User = "nobody", Cwd = "/" });
        Assert.Equal("nobody\n", stdout);
        var e = await Assert.ThrowsAsync<EnvdException>(() => RunAsync(agent.Client(), new ProcessSpec { Command = "id", User = "no-such-user-xyz" }));
        Assert.Equal(ConnectCodes.InvalidArgument, e.Code);
    }

    [Fact]
    public async Task Stdin_is_forwarded_and_closing_it_ends_the_reader()
    {
        var client = agent.Client();
        var output = new StringBuilder();
        ProcessExited? end = null;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        await foreach (var e in client.StartAsync(new ProcessSpec { Command = "cat", Stdin = true }, timeout.Token))
        {
            switch (e)
            {
                case ProcessStarted s:
                    await client.SendInputAsync(s.Pid, "ping\n"u8.ToArray(), timeout.Token);
                    break;
                case ProcessStdout o:
                    output.Append(Encoding.UTF8.GetString(o.Data.Span));
                    if (output.ToString() == "ping\n")
                    {
                        var pid = (await client.ListAsync(timeout.Token)).Single(p => p.Command == "cat").Pid;
                        await client.CloseStdinAsync(pid, timeout.Token);
                    }

                    break;
                case ProcessExited x:
                    end = x;
                    break;
            }
        }

        Assert.Equal("ping\n", output.ToString());
        Assert.Equal(0, end?.ExitCode);
    }

    [Fact]
    public async Task A_signal_kills_the_whole_process_group_and_is_reported()
    {
        var client = agent.Client();
        ProcessExited? end = null;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        await foreach (var e in client.StartAsync(new ProcessSpec { Command = "/bin/bash", Args = ["-c", "sleep 300 & sleep 300; echo never"] }, timeout.Token))
        {
            if (e is ProcessStarted s)
            {
                await client.SendSignalAsync(s.Pid, 9, timeout.Token);
            }
            else if (e is ProcessExited x)
            {
                end = x;
            }
        }

        Assert.NotNull(end);
        Assert.Equal("signal: killed", end.Status);
        Assert.Equal(-1, end.ExitCode);
    }

    [Fact]
    public async Task List_and_Connect_reach_a_running_process_by_pid()
    {
        var client = agent.Client();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        var script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick$i; sleep 0.3; done";
        var start = client.StartAsync(new ProcessSpec { Command = "/bin/bash", Args = ["-c", script], Tag = "ticker" }, timeout.Token).GetAsyncEnumerator(timeout.Token);
        Assert.True(await start.MoveNextAsync());
        var pid = Assert.IsType<ProcessStarted>(start.Current).Pid;
        await start.DisposeAsync(); // the process keeps running without its Start stream

        var listed = await client.ListAsync(timeout.Token);
        Assert.Contains(listed, p => p.Pid == pid && p.Tag == "ticker");

        var output = new StringBuilder();
        ProcessExited? end = null;
        await foreach (var e in client.ConnectAsync(pid, timeout.Token))
        {
            if (e is ProcessStdout o)
            {
                output.Append(Encoding.UTF8.GetString(o.Data.Span));
            }
            else if (e is ProcessExited x)
            {
                end = x;
            }
        }

        Assert.Contains("tick10\n", output.ToString(), StringComparison.Ordinal);
        Assert.Equal(0, end?.ExitCode);
        var missing = await Assert.ThrowsAsync<EnvdException>(async () =>
        {
            await foreach (var _ in client.ConnectAsync(999_999, timeout.Token))
            {
            }
        });
        Assert.Equal(ConnectCodes.NotFound, missing.Code);
    }

    [Fact]
    public async Task Files_can_be_written_read_listed_moved_and_removed()
    {
        var client = agent.Client();
        var dir = Path.Combine(agent.Root, "files-" + Guid.NewGuid().ToString("N")[..6]);
        var payload = new byte[300_000];
        Random.Shared.NextBytes(payload);
        await client.WriteFileAsync($"{dir}/deep/a.bin", new MemoryStream(payload), Ct);
        await using (var read = await client.ReadFileAsync($"{dir}/deep/a.bin", Ct))
        {
            using var copy = new MemoryStream();
            await read.CopyToAsync(copy, Ct);
            Assert.Equal(payload, copy.ToArray());
        }

        var stat = await client.StatAsync($"{dir}/deep/a.bin", Ct);
        Assert.Equal(("a.bin", "file", 300_000L), (stat.Name, stat.Type, stat.Size));

        var made = await client.MakeDirAsync($"{dir}/made", Ct);
        Assert.Equal("dir", made.Type);
        var again = await Assert.ThrowsAsync<EnvdException>(() => client.MakeDirAsync($"{dir}/made", Ct));
        Assert.Equal(ConnectCodes.AlreadyExists, again.Code);

        File.CreateSymbolicLink($"{dir}/link", "/etc/hostname");
        var entries = await client.ListDirAsync(dir, 2, Ct);
        Assert.Equal([$"{dir}/deep", $"{dir}/deep/a.bin", $"{dir}/link", $"{dir}/made"], entries.Select(e => e.Path));
        Assert.Equal("/etc/hostname", entries.Single(e => e.Name == "link").SymlinkTarget);
        Assert.Equal(2, (await client.ListDirAsync(dir, 0, Ct)).Count(e => e.Path.Count(c => c == '/') == dir.Count(c => c == '/') + 1 && e.Type == "dir"));

        var moved = await client.MoveAsync($"{dir}/deep/a.bin", $"{dir}/made/b.bin", Ct);
        Assert.Equal($"{dir}/made/b.bin", moved.Path);
        Assert.False(File.Exists($"{dir}/deep/a.bin"));

        await client.RemoveAsync($"{dir}/made", Ct);
        Assert.False(Directory.Exists($"{dir}/made"));
        var gone = await Assert.ThrowsAsync<EnvdException>(() => client.StatAsync($"{dir}/made", Ct));
        Assert.Equal(ConnectCodes.NotFound, gone.Code);
        var readMissing = await Assert.ThrowsAsync<EnvdException>(() => client.ReadFileAsync($"{dir}/nope", Ct));
        Assert.Equal(404, readMissing.HttpStatus);
    }

    [Fact]
    public async Task Multipart_upload_writes_each_named_file_and_answers_like_envd()
    {
        var dir = Path.Combine(agent.Root, "multi-" + Guid.NewGuid().ToString("N")[..6]);
        using var form = new MultipartFormDataContent();
        form.Add(new ByteArrayContent("one"u8.ToArray()), "file", $"{dir}/one.txt");
        form.Add(new ByteArrayContent("two"u8.ToArray()), "file", $"{dir}/sub/two.txt");
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, "files")) { Content = form };
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        using var response = await agent.Http.SendAsync(request, Ct);
        var body = await response.Content.ReadAsStringAsync(Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains($"\"path\":\"{dir}/sub/two.txt\"", body, StringComparison.Ordinal);
        Assert.Contains("\"type\":\"file\"", body, StringComparison.Ordinal);
        Assert.Equal("one", await File.ReadAllTextAsync($"{dir}/one.txt", Ct));
        Assert.Equal("two", await File.ReadAllTextAsync($"{dir}/sub/two.txt", Ct));
        Assert.Empty(Directory.GetFiles(dir, ".*airlock-*", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task A_write_replaces_a_symlink_instead_of_writing_through_it()
    {
        var dir = Directory.CreateTempSubdirectory("airlock-guest-victim-").FullName;
        try
        {
            var victim = Path.Combine(dir, "victim.txt");
            await File.WriteAllTextAsync(victim, "original", Ct);
            var link = Path.Combine(agent.Root, "link-" + Guid.NewGuid().ToString("N")[..6]);
            File.CreateSymbolicLink(link, victim);
            await agent.Client().WriteFileAsync(link, new MemoryStream("attacker"u8.ToArray()), Ct);
            Assert.Equal("original", await File.ReadAllTextAsync(victim, Ct));
            Assert.Equal("attacker", await File.ReadAllTextAsync(link, Ct));
            Assert.Null(new FileInfo(link).LinkTarget);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("GET", "files?path=a%00b", null, null, HttpStatusCode.BadRequest)]
    [InlineData("GET", "files?path=/", null, null, HttpStatusCode.BadRequest)]
    [InlineData("GET", "files", null, null, HttpStatusCode.BadRequest)]
    [InlineData("POST", "files", "text/plain", "x", HttpStatusCode.UnsupportedMediaType)]
    [InlineData("POST", "files", "application/octet-stream", "x", HttpStatusCode.BadRequest)]
    [InlineData("POST", "files?path=x", "multipart/form-data; boundary=zz", "--zz\r\ngarbage", HttpStatusCode.BadRequest)]
    [InlineData("POST", "process.Process/Nope", "application/json", "{}", HttpStatusCode.NotFound)]
    [InlineData("POST", "process.Process/List", "application/json", "{not json", HttpStatusCode.BadRequest)]
    [InlineData("POST", "process.Process/List", "text/plain", "{}", HttpStatusCode.UnsupportedMediaType)]
    [InlineData("POST", "process.Process/Start", "application/json", "{}", HttpStatusCode.UnsupportedMediaType)]
    [InlineData("POST", "filesystem.Filesystem/Stat", "application/json", "{\"path\":\"\"}", HttpStatusCode.BadRequest)]
    [InlineData("POST", "filesystem.Filesystem/WatchDir", "application/json", "{}", HttpStatusCode.UnsupportedMediaType)]
    [InlineData("POST", "filesystem.Filesystem/GetWatcherEvents", "application/json", "{\"watcherId\":\"nope\"}", HttpStatusCode.NotFound)]
    [InlineData("POST", "process.Process/Update", "application/json", "{}", HttpStatusCode.BadRequest)]
    [InlineData("POST", "process.Process/StreamInput", "application/json", "{}", HttpStatusCode.UnsupportedMediaType)]
    [InlineData("GET", "nowhere", null, null, HttpStatusCode.NotFound)]
    public async Task Bad_requests_get_clear_errors(string method, string path, string? contentType, string? body, HttpStatusCode expected)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), new Uri(agent.BaseAddress, path));
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        if (body is not null)
        {
            request.Content = new StringContent(body);
            request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType!);
        }

        using var response = await agent.Http.SendAsync(request, Ct);
        Assert.Equal(expected, response.StatusCode);
        var text = await response.Content.ReadAsStringAsync(Ct);
        Assert.Contains("\"message\"", text, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("wrong")]
    public async Task Every_route_but_health_needs_the_access_token(string? token)
    {
        var e = await Assert.ThrowsAsync<EnvdException>(() => agent.Client(token: token ?? string.Empty).ListAsync(Ct));
        Assert.Equal(401, e.HttpStatus);
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(agent.BaseAddress, "files?path=/etc/passwd"));
        using var response = await agent.Http.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        using var health = await agent.Http.GetAsync(new Uri(agent.BaseAddress, "health"), Ct);
        Assert.Equal(HttpStatusCode.NoContent, health.StatusCode);
    }

    [Fact]
    public async Task Quiet_streams_get_keepalives_and_a_deadline_ends_the_stream_not_the_process()
    {
        var start = new StartRequest { Process = new ProcessConfig { Cmd = "sleep", Args = { "30" } }, Tag = "deadline-" + Guid.NewGuid().ToString("N")[..6] };
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, "process.Process/Start"));
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        request.Headers.Add(EnvdProtocol.KeepaliveHeader, "1");
        request.Headers.Add("Connect-Timeout-Ms", "2500");
        request.Content = new ByteArrayContent(ConnectCodec.Envelope(0, ConnectCodec.Serialize(start, binary: false)));
        request.Content.Headers.ContentType = new MediaTypeHeaderValue(ConnectCodec.StreamJson);
        using var response = await agent.Http.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var reader = new ConnectCodec.EnvelopeReader();
        reader.Append(await response.Content.ReadAsByteArrayAsync(Ct));
        var keepalives = 0;
        ConnectException? error = null;
        while (reader.TryRead(out var flags, out var payload))
        {
            if ((flags & ConnectCodec.EndStreamFlag) != 0)
            {
                error = ConnectCodec.ReadError(payload, null);
            }
            else if (ConnectCodec.Parse(StartResponse.Parser, payload, false).Event.EventCase == ProcessEvent.EventOneofCase.Keepalive)
            {
                keepalives++;
            }
        }

        Assert.InRange(keepalives, 1, 3);
        Assert.Equal(ConnectCodes.DeadlineExceeded, error?.Code);
        var client = agent.Client();
        var running = Assert.Single(await client.ListAsync(Ct), p => p.Tag == start.Tag);
        await client.SendSignalAsync(running.Pid, 9, Ct);
    }
}

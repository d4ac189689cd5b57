namespace Airlock.Envd;

/// <summary>Constants of the envd protocol as Airlock speaks it.</summary>
public static class EnvdProtocol
{
    /// <summary>
    /// The envd version the guest agent reports. E2B's SDKs gate features on it: 0.3.0 lets a command run without stdin,
    /// 0.4.0 stops forcing a default user, 0.5.2 adds CloseStdin and 0.5.7 octet-stream uploads — all implemented.
    /// 0.6.2 (file metadata in extended attributes) is not, so this stays at 0.5.7.
    /// </summary>
    public const string Version = "0.5.7";

    /// <summary>The port the guest agent listens on inside every sandbox.</summary>
    public const int Port = 49983;

    /// <summary>The header carrying the per-sandbox access token.</summary>
    public const string AccessTokenHeader = "X-Access-Token";

    /// <summary>The header a client uses to ask for keepalive events on a stream, in seconds.</summary>
    public const string KeepaliveHeader = "Keepalive-Ping-Interval";

    /// <summary>Route prefix of the process service.</summary>
    public const string ProcessService = "process.Process";

    /// <summary>Route prefix of the filesystem service.</summary>
    public const string FilesystemService = "filesystem.Filesystem";

    /// <summary>Route prefix of Airlock's own agent-administration service (never forwarded by the envd gateway).</summary>
    public const string AgentService = "airlock.agent.v1.Agent";
}

namespace Airlock.Networking;

/// <summary>A sandbox network could not be created or removed; the message names the failing step.</summary>
public sealed class NetworkSetupException : Exception
{
    public NetworkSetupException()
    {
    }

    public NetworkSetupException(string message)
        : base(message)
    {
    }

    public NetworkSetupException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>The host could not open a TCP connection to a port inside a sandbox.</summary>
public sealed class SandboxConnectException : IOException
{
    public SandboxConnectException()
    {
    }

    public SandboxConnectException(string message)
        : base(message)
    {
    }

    public SandboxConnectException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Namespace of the sandbox that could not be reached, when known.</summary>
    public string? Namespace { get; init; }
}

namespace Airlock.Templates;

/// <summary>A template could not be built; the message says what to install or fix.</summary>
public sealed class TemplateBuildException : Exception
{
    public TemplateBuildException()
    {
    }

    public TemplateBuildException(string message) : base(message)
    {
    }

    public TemplateBuildException(string message, Exception innerException) : base(message, innerException)
    {
    }
}

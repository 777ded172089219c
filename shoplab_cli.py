"""The one `shoplab` command; each package contributes its own sub-command group."""
import typer

app = typer.Typer(help="shoplab: LLM shopping agents and query rewriting on a real search engine.", no_args_is_help=True)

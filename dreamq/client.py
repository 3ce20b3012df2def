"""Client commands of `dreamq` (submit, status, cancel) and `dreamq web`: no Keras here."""
import click

COMMANDS: list[click.Command] = []

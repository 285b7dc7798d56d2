"""The PostgreSQL catalogue: schema migrations, named queries, repository functions."""

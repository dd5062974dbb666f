"""Airflow DAG of the routing-chain drill drills/checkout-routing.yaml.

The spec is `kind: routing_chain`: drillkit.operators.chain_factory builds this dag from it.
"""

from drillkit.operators.chain_factory import dag_from_chain_spec_file

dag = dag_from_chain_spec_file("drills/checkout-routing.yaml", loader=__file__)

OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> import tomllib\n'
                                               ">>> assert my_rule is not ..., 'not done yet: write my_rule'\n"
                                               ">>> rules = deploy.router.policy_from_dict({'local': {'base_url': 'x', 'model': 'm'}, 'paid': {'base_url': 'y', 'model': 'n'}, "
                                               '**tomllib.loads(my_rule)}).rules\n'
                                               ">>> assert len(rules) == 1 and rules[0].route == 'paid', 'one rule whose route is the paid API'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}

OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> import tomllib\n'
                                               '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> _rules = lambda: deploy.router.policy_from_dict({'local': {'base_url': 'x', 'model': 'm'}, 'paid': {'base_url': 'y', 'model': 'n'}, "
                                               '**tomllib.loads(my_rule)}).rules\n'
                                               ">>> first_failure((lambda: my_rule is not ..., 'not done yet: write my_rule'), (lambda: isinstance(my_rule, str) and tomllib.loads(my_rule) is not "
                                               "None, 'my_rule is TOML text: one [[rules]] table with name, contains and route'), (lambda: len(_rules()) == 1, lambda: f'one [[rules]] entry, got "
                                               '{len(_rules())}\'), (lambda: _rules()[0].route == \'paid\', lambda: f\'route it to the paid API (route = "paid"), got {_rules()[0].route!r}\'))\n',
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
